using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.X86;

namespace LivePatch.Tests.Sites;

public class SiteChooserTests
{
    [Theory]
    [MemberData(nameof(SiteSamples.All), MemberType = typeof(SiteSamples))]
    public void Alternatives_follow_this_cpu_and_lock_prefixes_are_kept(string sample)
    {
        var cpu = CpuFeatures.Detect();
        var file = ElfFile.Load(SiteSamples.PathOf(sample));
        var tables = SiteTables.Read(file);

        var choices = SiteChooser.Choose(file, cpu);

        Assert.Equal(tables.Alternatives.Select(s => s.Address).Distinct().Count() + tables.LockPrefixes.Count, choices.Count);
        foreach (var entries in tables.Alternatives.GroupBy(s => s.Address).Select(g => g.ToList()))
        {
            var choice = Assert.Single(choices, c => c.Address == entries[0].Address);
            var winner = entries.LastOrDefault(s => cpu.Has(s.Feature));
            Assert.Equal(SiteKind.Alternative, choice.Kind);
            Assert.Equal(entries.Any(s => cpu.Has(s.Feature)), choice.UseReplacement);
            Assert.Equal(entries[0].Length, choice.Original.Length);
            Assert.Equal((choice.UseReplacement ? winner : entries[^1]).ReplacementLength, choice.Replacement.Length);
            Assert.All(entries, s => Assert.Contains(CpuFeatures.LinuxName(s.Feature), choice.Reason, StringComparison.Ordinal));
        }
        foreach (var site in tables.LockPrefixes)
        {
            var choice = Assert.Single(choices, c => c.Address == site.Address);
            Assert.False(choice.UseReplacement);
            Assert.Equal(0xf0, choice.Original[0]);
            Assert.Equal(0x3e, choice.Replacement[0]);
            Assert.Equal(choice.Original[1..], choice.Replacement[1..]);
            Assert.True(choice.Original.Length > 1, "the whole locked instruction is shown");
        }
    }

    /// <summary>The fixture's two-choice site: avx2 (mov $1, 5 bytes) then avx512f (mov $1; add $1, 8 bytes).</summary>
    [Theory]
    [InlineData(new CpuFeature[0], null, "cpu lacks avx2, lacks avx512f")]
    [InlineData(new[] { CpuFeature.Avx2 }, 5, "cpu has avx2, lacks avx512f: replacement 1 of 2")]
    [InlineData(new[] { CpuFeature.Avx512F }, 8, "cpu lacks avx2, has avx512f: replacement 2 of 2")]
    [InlineData(new[] { CpuFeature.Avx2, CpuFeature.Avx512F }, 8, "cpu has avx2, has avx512f: replacement 2 of 2")]
    public void A_two_choice_site_gets_the_last_replacement_whose_feature_the_cpu_has(CpuFeature[] present, int? replacementLength, string reason)
    {
        var file = ElfFile.Load(SiteSamples.PathOf("sites-pie"));
        var site = SiteTables.Read(file).Alternatives.First(s => s.Feature == CpuFeature.Avx2);

        var choice = Assert.Single(SiteChooser.Choose(file, CpuFeatures.Of(present)), c => c.Address == site.Address);

        Assert.Equal(replacementLength is not null, choice.UseReplacement);
        Assert.Equal(replacementLength ?? 8, choice.Replacement.Length); // with none chosen, the last one is shown
        Assert.Equal(reason, choice.Reason);
    }
}
