using System.Diagnostics;

namespace LivePatch.Tests.Fixtures;

/// <summary>Runs a program of the toolchain (as, objdump, readelf, gcc) and returns what it printed.</summary>
internal static class ExternalTool
{
    public static string Run(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', arguments)} did not finish in 60 s");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{program} {string.Join(' ', arguments)} exited {process.ExitCode}: {stderr.Result}");
        return stdout;
    }

    /// <summary>A fresh directory for one test's build outputs, under the run's temporary root (removed when the run ends).</summary>
    public static string ScratchDirectory(string name)
    {
        var path = Path.Combine(Gcc.OutputDirectory, name, Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>Assembles GNU as source and returns the bytes of its .text section.</summary>
    public static byte[] AssembleText(string source)
    {
        var directory = ScratchDirectory("as");
        var input = Path.Combine(directory, "code.s");
        var obj = Path.Combine(directory, "code.o");
        var bin = Path.Combine(directory, "code.bin");
        File.WriteAllText(input, source);
        Run("as", "--64", input, "-o", obj);
        Run("objcopy", "-O", "binary", "-j", ".text", obj, bin);
        return File.ReadAllBytes(bin);
    }
}
