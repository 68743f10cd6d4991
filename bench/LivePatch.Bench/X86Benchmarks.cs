using BenchmarkDotNet.Attributes;
using LivePatch.X86;

namespace LivePatch.Bench;

/// <summary>The per-site costs of preparing patch buffers: these run once per site before any stop.</summary>
[MemoryDiagnoser]
public class X86Benchmarks
{
    // push rbp; mov rbp,rsp; mov rax,[rip+0x10]; je +0x20: a prologue with RIP-relative and branch operands.
    private static readonly byte[] Prologue = Convert.FromHexString("554889E5488B0510000000740F");
    private readonly byte[] _site = new byte[PatchBuffer.MaxPatchLength];

    [Benchmark(Description = "Nops.Fill 254 bytes")]
    public int FillMaxSite() => Nops.Fill(_site);

    [Benchmark(Description = "PatchBuffer: jmp rel32 + Fill, 16-byte site")]
    public int DetourBuffer()
    {
        var buffer = new PatchBuffer(0x7f00_1234_0000, 16);
        buffer.WriteJump(0x7f00_1200_0000);
        buffer.Fill();
        return buffer.Length;
    }

    [Benchmark(Description = "InstructionBoundaries.Cover 5 bytes")]
    public int CoverFiveBytes() => InstructionBoundaries.Cover(Prologue, 0x401000, 5).Length;

    [Benchmark(Description = "Relocator: 4-instruction prologue to a trampoline")]
    public int RelocatePrologue() => Relocator.Relocate(Prologue, 0x401000, 0x501000, 0x40100d).Bytes.Length;

    [Benchmark(Description = "CpuFeatures.Detect")]
    public bool DetectCpu() => CpuFeatures.Detect().Has(CpuFeature.Avx2);
}
