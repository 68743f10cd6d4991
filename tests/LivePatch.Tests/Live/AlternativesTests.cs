using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;

namespace LivePatch.Tests.Live;

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

        using var patcher = LivePatcher.Attach(target.Pid, ProcessTests.Generous);
        var report = patcher.ApplyAlternatives();

        Assert.Equal(hasPopcnt ? 2 : 1, report.Written);
        Assert.Equal(3, report.ThreadsStopped);
        target.AssertValueBecomes("pop", hasPopcnt ? 8 : 255);
        target.AssertValueBecomes("rip", 2); // the RIP-relative replacement reads fast_value from its new place

        var again = patcher.ApplyAlternatives();

        Assert.Equal(0, again.Written);
        Assert.Equal(report.Chosen, again.Chosen);
    }
}
