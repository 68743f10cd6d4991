using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Text;

namespace LivePatch.Bench.Common;

/// <summary>What the figures were measured on: the CPUs, the hypervisor, the kernel and its Spectre v2 mitigation, gcc, gdb, .NET.</summary>
internal sealed record Machine(int Cpus, string CpuModel, string Hypervisor, string Kernel, string SpectreV2, string Gcc, string Gdb, string Runtime)
{
    private const string SpectreV2File = "/sys/devices/system/cpu/vulnerabilities/spectre_v2";

    public static Machine Describe()
    {
        var model = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
        var kernel = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
        var spectre = File.Exists(SpectreV2File) ? File.ReadAllText(SpectreV2File).Trim() : "unknown";
        return new Machine(Environment.ProcessorCount, model, HypervisorSignature(), kernel, spectre,
            ExternalProgram.Version("gcc"), ExternalProgram.Version("gdb"), RuntimeInformation.FrameworkDescription);
    }

    /// <summary>The hypervisor's CPUID signature (leaf 0x40000000: "KVMKVMKVM"), or "none" on bare metal.</summary>
    private static string HypervisorSignature()
    {
        if (!X86Base.IsSupported || (X86Base.CpuId(1, 0).Ecx & (1 << 31)) == 0)
            return "none";
        var (_, ebx, ecx, edx) = X86Base.CpuId(0x40000000, 0);
        var signature = new byte[12];
        BitConverter.TryWriteBytes(signature.AsSpan(0), ebx);
        BitConverter.TryWriteBytes(signature.AsSpan(4), ecx);
        BitConverter.TryWriteBytes(signature.AsSpan(8), edx);
        var name = Encoding.ASCII.GetString(signature).TrimEnd('\0');
        return name == "KVMKVMKVM" ? "KVM" : name;
    }

    /// <summary>The CPUs, the kernel with its Spectre v2 mitigation, gcc and .NET: what a call's cost depends on.</summary>
    public override string ToString() => $"{Cpus} {(Hypervisor == "none" ? "CPUs" : $"vCPUs under {Hypervisor}")} ({CpuModel}), Linux {Kernel} (Spectre v2: {SpectreV2}), {Gcc}, {Runtime}";
}
