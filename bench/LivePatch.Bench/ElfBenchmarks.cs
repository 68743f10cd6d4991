using BenchmarkDotNet.Attributes;
using LivePatch.Elf;

namespace LivePatch.Bench;

/// <summary>What resolving symbols in a target costs: parsing its modules and looking a name up.</summary>
[MemoryDiagnoser]
public class ElfBenchmarks
{
    private byte[] _libc = [];
    private byte[] _ls = [];
    private ElfFile? _parsedLibc;

    [GlobalSetup]
    public void Setup()
    {
        _libc = File.ReadAllBytes("/lib/x86_64-linux-gnu/libc.so.6");
        _ls = File.ReadAllBytes("/bin/ls");
        _parsedLibc = ElfFile.Parse(_libc);
        _parsedLibc.FindSymbols("malloc");
    }

    [Benchmark(Description = "Parse and validate libc.so.6 (all symbols, relocations, notes)")]
    public int ParseLibc() => ElfFile.Parse(_libc).DynamicSymbols.Count;

    [Benchmark(Description = "Parse and validate /bin/ls")]
    public int ParseLs() => ElfFile.Parse(_ls).Sections.Count;

    [Benchmark(Description = "FindSymbols in parsed libc (indexed)")]
    public int FindInLibc() => _parsedLibc!.FindSymbols("memcpy").Count;
}
