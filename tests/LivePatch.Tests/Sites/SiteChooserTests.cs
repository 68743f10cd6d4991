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

        Assert.Equal(tables.Alternatives.Count + tables.LockPrefixes.Count, choices.Count);
        foreach (var site in tables.Alternatives)
        {
            var choice = Assert.Single(choices, c => c.Address == site.Address);
            Assert.Equal(SiteKind.Alternative, choice.Kind);
            Assert.Equal(cpu.Has(site.Feature), choice.UseReplacement);
            Assert.Equal(site.Length, choice.Original.Length);
            Assert.Equal(site.ReplacementLength, choice.Replacement.Length);
            Assert.Contains(CpuFeatures.LinuxName(site.Feature), choice.Reason, StringComparison.Ordinal);
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
}
