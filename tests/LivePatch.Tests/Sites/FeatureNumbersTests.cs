using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.X86;

namespace LivePatch.Tests.Sites;

public partial class FeatureNumbersTests
{
    // sites.h repeats the CpuFeature numbers for C: every one must be there, with the same number.
    [Fact]
    public void The_header_numbers_every_cpu_feature_as_the_library_does()
    {
        var header = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "include", "livepatch", "sites.h"));
        var defined = FeatureDefine().Matches(header).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));

        Assert.Equal(Enum.GetValues<CpuFeature>().Length, defined.Count);
        foreach (var feature in Enum.GetValues<CpuFeature>())
        {
            var name = feature.ToString().ToUpperInvariant();
            Assert.True(defined.TryGetValue(name, out var number), $"sites.h has no LP_FEATURE_{name}");
            Assert.Equal((int)feature, number);
        }
    }

    [GeneratedRegex(@"#define LP_FEATURE_(\w+)\s+(\d+)")]
    private static partial Regex FeatureDefine();
}
