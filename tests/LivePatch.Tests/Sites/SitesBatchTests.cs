using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;
using LivePatch.Sites;

namespace LivePatch.Tests.Sites;

/// <summary>SitePatcher.ApplySites: every kind of site of a running program in one stop.</summary>
[Collection(ProcessTests.Name)]
public class SitesBatchTests
{
    [Fact]
    public void Alternatives_call_sites_and_lock_prefixes_go_in_with_one_stop()
    {
        var flags = $"-O2 -pthread -std=c11 -I {Path.Combine(AppContext.BaseDirectory, "include")}";
        using var example = RunningTarget.Start("../examples/sites/example.c", flags);
        example.WaitForLine(l => l.Contains("path=generic", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        using var patcher = SitePatcher.Attach(example.Pid, Generous.Sites);

        var report = patcher.ApplySites();

        var module = Assert.Single(report.Modules);
        Assert.Equal((2, 2, 3, 3, 3), (module.AlternativesChosen, module.AlternativesWritten, module.CallSites, module.CallSitesChanged, module.CallSitesWritten));
        Assert.Equal((2, true, true), (report.LockPrefixes, report.LockPrefixesDropped, report.WatchingLockPrefixes));
        Assert.Equal((7, 1, 1), (report.Written, report.ThreadsStopped, report.Attempts));
        var path = CpuFeatures.Detect().Has(CpuFeature.Avx2) ? "avx2" : "sse4.2";
        example.WaitForLine(l => l.Contains($"clz(1000)=22 path={path} ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));

        var again = patcher.ApplySites();
        Assert.Equal(0, again.Written);
    }

    [Fact]
    public void Lock_prefixes_stay_when_not_asked_to_drop_them_and_every_other_site_goes_in()
    {
        var flags = $"-O2 -pthread -std=c11 -I {Path.Combine(AppContext.BaseDirectory, "include")}";
        using var example = RunningTarget.Start("../examples/sites/example.c", flags);
        example.WaitForLine(l => l.Contains("path=generic", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        using var patcher = SitePatcher.Attach(example.Pid, Generous.Sites);

        var report = patcher.ApplySites(new SitesRequest { DropLockPrefixes = false });

        Assert.Equal((2, false, false, "kept: not asked to drop them"), (report.LockPrefixes, report.LockPrefixesDropped, report.WatchingLockPrefixes, report.LockReason));
        Assert.Equal(5, report.Written);
        Assert.False(patcher.IsWatchingLockPrefixes);
        var path = CpuFeatures.Detect().Has(CpuFeature.Avx2) ? "avx2" : "sse4.2";
        example.WaitForLine(l => l.Contains($"clz(1000)=22 path={path} ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
    }
}
