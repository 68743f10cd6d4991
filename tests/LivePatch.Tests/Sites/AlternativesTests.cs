using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;
using LivePatch.Sites;

namespace LivePatch.Tests.Sites;

[Collection(ProcessTests.Name)]
public class AlternativesTests
{
    [Fact]
    public void Alternatives_are_rewritten_in_a_running_process_with_replacements_relocated_to_their_sites()
    {
        using var target = RunningTarget.Start("sites/alt_target.c", $"-O2 -g -pthread -I {Path.Combine(AppContext.BaseDirectory, "include")}");
        target.AssertValueBecomes("pop", 255);
        target.AssertValueBecomes("rip", 1);
        var hasPopcnt = CpuFeatures.Detect().Has(CpuFeature.Popcnt);

        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        var report = patcher.ApplyAlternatives();

        Assert.Equal(hasPopcnt ? 2 : 1, report.Written);
        Assert.Equal(3, report.ThreadsStopped);
        target.AssertValueBecomes("pop", hasPopcnt ? 8 : 255);
        target.AssertValueBecomes("rip", 2); // the RIP-relative replacement reads fast_value from its new place

        var again = patcher.ApplyAlternatives();

        Assert.Equal(0, again.Written);
        Assert.Equal(report.Chosen, again.Chosen);
    }

    /// <summary>
    /// alt2_target.c: site "first" has replacements for popcnt (1) then avx512f (2), "second" the other order; 0 as
    /// built. The last replacement whose feature the CPU has wins, each site written once.
    /// </summary>
    [Theory]
    [InlineData("popcnt", 1, 2)]
    [InlineData("avx512f", 2, 1)]
    [InlineData("popcnt avx512f", 2, 2)]
    [InlineData("", 0, 0)]
    public void A_two_choice_site_gets_the_last_replacement_whose_feature_the_cpu_has(string features, int first, int second)
    {
        var cpu = CpuFeatures.Of(features.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(f => CpuFeatures.TryParse(f, out var feature) ? feature : throw new ArgumentException(f)));
        using var target = RunningTarget.Start("sites/alt2_target.c", Alt2Flags);
        target.AssertValueBecomes("first", 0);
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        var report = patcher.ApplyAlternatives(cpu: cpu);

        Assert.Equal((first != 0 ? 1 : 0) + (second != 0 ? 1 : 0), report.Written);
        target.AssertValueBecomes("first", first);
        target.AssertValueBecomes("second", second);
        Assert.Equal(0, patcher.ApplyAlternatives(cpu: cpu).Written);
    }

    [Fact]
    public void Two_choice_sites_follow_this_machine()
    {
        var cpu = CpuFeatures.Detect();
        int Expected(CpuFeature a, CpuFeature b) => cpu.Has(b) ? 2 : cpu.Has(a) ? 1 : 0;
        using var target = RunningTarget.Start("sites/alt2_target.c", Alt2Flags);
        target.AssertValueBecomes("first", 0);
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        patcher.ApplyAlternatives();

        target.AssertValueBecomes("first", Expected(CpuFeature.Popcnt, CpuFeature.Avx512F));
        target.AssertValueBecomes("second", Expected(CpuFeature.Avx512F, CpuFeature.Popcnt));
        // And without avx512f (clearcpuid-style) on a fresh process: popcnt, where present, wins both.
        using var other = RunningTarget.Start("sites/alt2_target.c", Alt2Flags);
        other.AssertValueBecomes("first", 0);
        using var again = SitePatcher.Attach(other.Pid, Generous.Sites);
        again.ApplyAlternatives(cpu: cpu.Without(CpuFeature.Avx512F));
        var popcnt = cpu.Has(CpuFeature.Popcnt);
        other.AssertValueBecomes("first", popcnt ? 1 : 0);
        other.AssertValueBecomes("second", popcnt ? 2 : 0);
    }

    private static string Alt2Flags => $"-O2 -g -pthread -Wall -Wextra -Werror -I {Path.Combine(AppContext.BaseDirectory, "include")}";
}
