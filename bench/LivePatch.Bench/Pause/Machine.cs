using System.Runtime.InteropServices;

namespace LivePatch.Bench.Pause;

/// <summary>What the figures were measured on.</summary>
internal sealed record Machine(int Cpus, string CpuModel, string Kernel, string Runtime, string Gdb)
{
    public static Machine Describe()
    {
        var model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
        var kernel = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        string gdb;
        try
        {
            using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("gdb", "--version") { RedirectStandardOutput = true, UseShellExecute = false });
            gdb = process?.StandardOutput.ReadLine()?.Trim() ?? "unknown";
            process?.WaitForExit();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            gdb = "not installed";
        }
        return new Machine(Environment.ProcessorCount, model, kernel, RuntimeInformation.FrameworkDescription, gdb);
    }

    public override string ToString() => $"{Cpus} CPUs ({CpuModel}), Linux {Kernel}, {Runtime}, {Gdb}";
}
