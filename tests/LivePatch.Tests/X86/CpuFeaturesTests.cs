using System.Runtime.Intrinsics.X86;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

public class CpuFeaturesTests
{
    private static readonly CpuFeatures Detected = CpuFeatures.Detect();

    // The kernel reads the same CPUID bits (and clears what the OS cannot save), so /proc/cpuinfo is the reference.
    [Fact]
    public void Every_feature_agrees_with_what_the_kernel_reports_in_proc_cpuinfo()
    {
        var flags = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("flags", StringComparison.Ordinal))
            .Split(':')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();

        Assert.All(Enum.GetValues<CpuFeature>(), feature =>
            Assert.True(flags.Contains(CpuFeatures.LinuxName(feature)) == Detected.Has(feature),
                $"{feature} ({CpuFeatures.LinuxName(feature)}): kernel says {flags.Contains(CpuFeatures.LinuxName(feature))}, CPUID says {Detected.Has(feature)}"));
    }

    [Fact]
    public void Features_the_runtime_uses_agree_with_the_runtime()
    {
        Assert.Equal(Sse2.IsSupported, Detected.Has(CpuFeature.Sse2));
        Assert.Equal(Sse42.IsSupported, Detected.Has(CpuFeature.Sse42));
        Assert.Equal(Popcnt.IsSupported, Detected.Has(CpuFeature.Popcnt));
        Assert.Equal(Avx2.IsSupported, Detected.Has(CpuFeature.Avx2));
        Assert.Equal(Bmi1.IsSupported, Detected.Has(CpuFeature.Bmi1));
        Assert.Equal(Bmi2.IsSupported, Detected.Has(CpuFeature.Bmi2));
        Assert.Equal(Lzcnt.IsSupported, Detected.Has(CpuFeature.Lzcnt));
        Assert.Equal(Avx512F.IsSupported, Detected.Has(CpuFeature.Avx512F));
    }

    [Fact]
    public void An_x86_64_cpu_always_has_sse2() => Assert.Contains(CpuFeature.Sse2, Detected.Present);

    // Site tables store these numbers: renumbering would break binaries already built.
    [Theory]
    [InlineData(CpuFeature.Sse2, 0, "sse2")]
    [InlineData(CpuFeature.Sse42, 4, "sse4_2")]
    [InlineData(CpuFeature.Popcnt, 5, "popcnt")]
    [InlineData(CpuFeature.Avx, 13, "avx")]
    [InlineData(CpuFeature.Avx2, 14, "avx2")]
    [InlineData(CpuFeature.Avx512F, 15, "avx512f")]
    [InlineData(CpuFeature.Bmi1, 19, "bmi1")]
    [InlineData(CpuFeature.Bmi2, 20, "bmi2")]
    [InlineData(CpuFeature.Erms, 24, "erms")]
    [InlineData(CpuFeature.Fsrm, 25, "fsrm")]
    [InlineData(CpuFeature.ClflushOpt, 26, "clflushopt")]
    [InlineData(CpuFeature.Rdtscp, 28, "rdtscp")]
    public void Feature_numbers_and_names_are_stable(CpuFeature feature, int number, string linuxName)
    {
        Assert.Equal(number, (int)feature);
        Assert.Equal(linuxName, CpuFeatures.LinuxName(feature));
        Assert.True(CpuFeatures.TryParse(linuxName, out var parsed));
        Assert.Equal(feature, parsed);
        Assert.True(CpuFeatures.TryParse(feature.ToString().ToUpperInvariant(), out parsed));
        Assert.Equal(feature, parsed);
    }

    [Fact]
    public void Unknown_names_do_not_parse() => Assert.False(CpuFeatures.TryParse("avx9000", out _));
}
