using System.Collections.Immutable;
using System.Runtime.Intrinsics.X86;

namespace LivePatch.X86;

/// <summary>
/// A CPU feature that code sites can be specialised for. The numeric values are stable: site tables
/// record them.
/// </summary>
public enum CpuFeature
{
    /// <summary>SSE2 (CPUID 1, EDX bit 26).</summary>
    Sse2 = 0,
    /// <summary>SSE3 (CPUID 1, ECX bit 0; Linux calls it <c>pni</c>).</summary>
    Sse3 = 1,
    /// <summary>Supplemental SSE3 (CPUID 1, ECX bit 9).</summary>
    Ssse3 = 2,
    /// <summary>SSE4.1 (CPUID 1, ECX bit 19).</summary>
    Sse41 = 3,
    /// <summary>SSE4.2 (CPUID 1, ECX bit 20).</summary>
    Sse42 = 4,
    /// <summary>POPCNT (CPUID 1, ECX bit 23).</summary>
    Popcnt = 5,
    /// <summary>CMPXCHG16B (CPUID 1, ECX bit 13).</summary>
    Cx16 = 6,
    /// <summary>MOVBE (CPUID 1, ECX bit 22).</summary>
    Movbe = 7,
    /// <summary>AES-NI (CPUID 1, ECX bit 25).</summary>
    Aes = 8,
    /// <summary>PCLMULQDQ (CPUID 1, ECX bit 1).</summary>
    Pclmulqdq = 9,
    /// <summary>FMA3 (CPUID 1, ECX bit 12), usable only when the OS saves AVX state.</summary>
    Fma = 10,
    /// <summary>F16C (CPUID 1, ECX bit 29), usable only when the OS saves AVX state.</summary>
    F16c = 11,
    /// <summary>RDRAND (CPUID 1, ECX bit 30).</summary>
    Rdrand = 12,
    /// <summary>AVX (CPUID 1, ECX bit 28), usable only when the OS saves AVX state.</summary>
    Avx = 13,
    /// <summary>AVX2 (CPUID 7.0, EBX bit 5), usable only when the OS saves AVX state.</summary>
    Avx2 = 14,
    /// <summary>AVX-512 Foundation (CPUID 7.0, EBX bit 16), usable only when the OS saves AVX-512 state.</summary>
    Avx512F = 15,
    /// <summary>AVX-512 DQ (CPUID 7.0, EBX bit 17).</summary>
    Avx512Dq = 16,
    /// <summary>AVX-512 BW (CPUID 7.0, EBX bit 30).</summary>
    Avx512Bw = 17,
    /// <summary>AVX-512 VL (CPUID 7.0, EBX bit 31).</summary>
    Avx512Vl = 18,
    /// <summary>BMI1 (CPUID 7.0, EBX bit 3).</summary>
    Bmi1 = 19,
    /// <summary>BMI2 (CPUID 7.0, EBX bit 8).</summary>
    Bmi2 = 20,
    /// <summary>ADX (CPUID 7.0, EBX bit 19).</summary>
    Adx = 21,
    /// <summary>RDSEED (CPUID 7.0, EBX bit 18).</summary>
    Rdseed = 22,
    /// <summary>SHA extensions (CPUID 7.0, EBX bit 29; Linux calls it <c>sha_ni</c>).</summary>
    Sha = 23,
    /// <summary>Enhanced REP MOVSB/STOSB (CPUID 7.0, EBX bit 9).</summary>
    Erms = 24,
    /// <summary>Fast short REP MOVSB (CPUID 7.0, EDX bit 4).</summary>
    Fsrm = 25,
    /// <summary>CLFLUSHOPT (CPUID 7.0, EBX bit 23).</summary>
    ClflushOpt = 26,
    /// <summary>CLWB (CPUID 7.0, EBX bit 24).</summary>
    Clwb = 27,
    /// <summary>RDTSCP (CPUID 0x80000001, EDX bit 27).</summary>
    Rdtscp = 28,
    /// <summary>LZCNT (CPUID 0x80000001, ECX bit 5; Linux calls it <c>abm</c>).</summary>
    Lzcnt = 29,
    /// <summary>Running under a hypervisor (CPUID 1, ECX bit 31).</summary>
    Hypervisor = 30,
}

/// <summary>The CPU features this processor has, read once with CPUID.</summary>
public sealed class CpuFeatures
{
    private enum Register { Eax, Ebx, Ecx, Edx }

    private enum OsState { None, Avx, Avx512 }

    private readonly record struct Bit(CpuFeature Feature, int Leaf, int Subleaf, Register Register, int Index, string LinuxName, OsState NeedsOs = OsState.None);

    // CPUID leaf, register and bit of each feature, and the name /proc/cpuinfo gives it.
    private static readonly ImmutableArray<Bit> Bits =
    [
        new(CpuFeature.Sse2, 1, 0, Register.Edx, 26, "sse2"),
        new(CpuFeature.Sse3, 1, 0, Register.Ecx, 0, "pni"),
        new(CpuFeature.Ssse3, 1, 0, Register.Ecx, 9, "ssse3"),
        new(CpuFeature.Sse41, 1, 0, Register.Ecx, 19, "sse4_1"),
        new(CpuFeature.Sse42, 1, 0, Register.Ecx, 20, "sse4_2"),
        new(CpuFeature.Popcnt, 1, 0, Register.Ecx, 23, "popcnt"),
        new(CpuFeature.Cx16, 1, 0, Register.Ecx, 13, "cx16"),
        new(CpuFeature.Movbe, 1, 0, Register.Ecx, 22, "movbe"),
        new(CpuFeature.Aes, 1, 0, Register.Ecx, 25, "aes"),
        new(CpuFeature.Pclmulqdq, 1, 0, Register.Ecx, 1, "pclmulqdq"),
        new(CpuFeature.Fma, 1, 0, Register.Ecx, 12, "fma", OsState.Avx),
        new(CpuFeature.F16c, 1, 0, Register.Ecx, 29, "f16c", OsState.Avx),
        new(CpuFeature.Rdrand, 1, 0, Register.Ecx, 30, "rdrand"),
        new(CpuFeature.Avx, 1, 0, Register.Ecx, 28, "avx", OsState.Avx),
        new(CpuFeature.Avx2, 7, 0, Register.Ebx, 5, "avx2", OsState.Avx),
        new(CpuFeature.Avx512F, 7, 0, Register.Ebx, 16, "avx512f", OsState.Avx512),
        new(CpuFeature.Avx512Dq, 7, 0, Register.Ebx, 17, "avx512dq", OsState.Avx512),
        new(CpuFeature.Avx512Bw, 7, 0, Register.Ebx, 30, "avx512bw", OsState.Avx512),
        new(CpuFeature.Avx512Vl, 7, 0, Register.Ebx, 31, "avx512vl", OsState.Avx512),
        new(CpuFeature.Bmi1, 7, 0, Register.Ebx, 3, "bmi1"),
        new(CpuFeature.Bmi2, 7, 0, Register.Ebx, 8, "bmi2"),
        new(CpuFeature.Adx, 7, 0, Register.Ebx, 19, "adx"),
        new(CpuFeature.Rdseed, 7, 0, Register.Ebx, 18, "rdseed"),
        new(CpuFeature.Sha, 7, 0, Register.Ebx, 29, "sha_ni"),
        new(CpuFeature.Erms, 7, 0, Register.Ebx, 9, "erms"),
        new(CpuFeature.Fsrm, 7, 0, Register.Edx, 4, "fsrm"),
        new(CpuFeature.ClflushOpt, 7, 0, Register.Ebx, 23, "clflushopt"),
        new(CpuFeature.Clwb, 7, 0, Register.Ebx, 24, "clwb"),
        new(CpuFeature.Rdtscp, unchecked((int)0x80000001), 0, Register.Edx, 27, "rdtscp"),
        new(CpuFeature.Lzcnt, unchecked((int)0x80000001), 0, Register.Ecx, 5, "abm"),
        new(CpuFeature.Hypervisor, 1, 0, Register.Ecx, 31, "hypervisor"),
    ];

    private readonly ImmutableHashSet<CpuFeature> _present;

    private CpuFeatures(ImmutableHashSet<CpuFeature> present) => _present = present;

    /// <summary>Reads this processor's features with CPUID.</summary>
    /// <exception cref="PlatformNotSupportedException">The process does not run on x86-64.</exception>
    public static CpuFeatures Detect()
    {
        if (!X86Base.X64.IsSupported)
            throw new PlatformNotSupportedException("CPU features are read with CPUID, which needs an x86-64 processor");
        // CPUID traps to the hypervisor in a VM (microseconds each): ask each leaf once.
        var leaves = new Dictionary<(int Leaf, int Subleaf), (int Eax, int Ebx, int Ecx, int Edx)>();
        (int Eax, int Ebx, int Ecx, int Edx) Query(int leaf, int subleaf)
        {
            if (!leaves.TryGetValue((leaf, subleaf), out var registers))
                leaves[(leaf, subleaf)] = registers = X86Base.CpuId(leaf, subleaf);
            return registers;
        }
        var maxLeaf = (uint)Query(0, 0).Eax;
        var maxExtendedLeaf = (uint)Query(unchecked((int)0x80000000), 0).Eax;
        var osSaves = OsSavedState(Query(1, 0).Ecx);
        var present = ImmutableHashSet.CreateBuilder<CpuFeature>();
        foreach (var bit in Bits)
        {
            var leaf = (uint)bit.Leaf;
            if (leaf >= 0x80000000 ? leaf > maxExtendedLeaf : leaf > maxLeaf)
                continue;
            var (eax, ebx, ecx, edx) = Query(bit.Leaf, bit.Subleaf);
            var value = bit.Register switch { Register.Eax => eax, Register.Ebx => ebx, Register.Ecx => ecx, _ => edx };
            if ((value & (1 << bit.Index)) != 0 && osSaves >= bit.NeedsOs)
                present.Add(bit.Feature);
        }
        return new CpuFeatures(present.ToImmutable());
    }

    /// <summary>True when this processor has <paramref name="feature"/> and the OS lets programs use it.</summary>
    public bool Has(CpuFeature feature) => _present.Contains(feature);

    /// <summary>These features minus <paramref name="features"/>: to choose sites as if the CPU lacked them (the kernel's <c>clearcpuid=</c>).</summary>
    public CpuFeatures Without(params IEnumerable<CpuFeature> features) => new(_present.Except(features));

    /// <summary>Exactly <paramref name="features"/>, whatever this CPU has: for choosing sites whose code any CPU runs (tests).</summary>
    internal static CpuFeatures Of(params IEnumerable<CpuFeature> features) => new([.. features]);

    /// <summary>Every feature present, in enum order.</summary>
    public IReadOnlyList<CpuFeature> Present => [.. _present.Order()];

    /// <summary>The name Linux gives <paramref name="feature"/> in <c>/proc/cpuinfo</c> (<c>sse4_2</c>, <c>avx2</c>, ...).</summary>
    public static string LinuxName(CpuFeature feature) =>
        Bits.FirstOrDefault(b => b.Feature == feature).LinuxName
        ?? throw new ArgumentOutOfRangeException(nameof(feature), feature, "not a known CPU feature");

    /// <summary>Finds a feature by its enum name or its Linux name, ignoring case (<c>sse4_2</c>, <c>Sse42</c>).</summary>
    public static bool TryParse(string name, out CpuFeature feature)
    {
        foreach (var bit in Bits)
        {
            if (string.Equals(bit.LinuxName, name, StringComparison.OrdinalIgnoreCase)
                || string.Equals(bit.Feature.ToString(), name, StringComparison.OrdinalIgnoreCase))
            {
                feature = bit.Feature;
                return true;
            }
        }
        feature = default;
        return false;
    }

    // AVX needs the OS to save YMM state and AVX-512 also opmask and ZMM state. Without XGETBV,
    // OSXSAVE says the OS manages XCR0, and the runtime's own XCR0 check says which parts it set.
    private static OsState OsSavedState(int leaf1Ecx)
    {
        var osxsave = (leaf1Ecx & (1 << 27)) != 0;
        if (!osxsave || !Avx.IsSupported)
            return OsState.None;
        return Avx512F.IsSupported ? OsState.Avx512 : OsState.Avx;
    }
}
