using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Sites;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Sites;

[Collection(ProcessTests.Name)]
public class StaticKeyTests
{

    [Fact]
    public void The_table_lists_every_site_with_its_key_and_on_path()
    {
        var file = ElfFile.Load(RunningTarget.Build("sites/keys_target.c", TestTargets.SitesFlags));

        var keys = SiteTables.Read(file).StaticKeys;

        Assert.Equal(["tracing", "verbose", "verbose"], keys.Select(k => k.Key).Order().ToArray());
        Assert.All(keys, k => Assert.NotEqual(k.Address + 5, k.Target));
    }

    [Fact]
    public void Switching_a_key_rewrites_all_its_sites_in_one_stop_and_back()
    {
        using var target = RunningTarget.Start("sites/keys_target.c", TestTargets.SitesFlags);
        target.AssertValueBecomes("traced", 0);
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        var on = patcher.SetStaticKey("verbose", true);

        Assert.Equal((2, 2, 3), (on.Sites, on.Written, on.ThreadsStopped));
        AssertGrowing(target, "verbose");
        target.AssertValueBecomes("traced", 0);
        Assert.Equal(0, patcher.SetStaticKey("verbose", true).Written);

        patcher.SetStaticKey("tracing", true);
        AssertGrowing(target, "traced");
        var off = patcher.SetStaticKey("verbose", false);

        Assert.Equal(2, off.Written);
        AssertSettles(target, "verbose");
        AssertGrowing(target, "traced");
    }

    [Fact]
    public void An_unknown_key_is_refused_naming_the_keys_there_are()
    {
        using var target = RunningTarget.Start("sites/keys_target.c", TestTargets.SitesFlags);
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        var error = Assert.Throws<SiteRefusedException>(() => patcher.SetStaticKey("debug", true));

        Assert.Equal(SiteRefusal.UnknownStaticKey, error.Refusal);
        Assert.Contains("no static key 'debug'", error.Message, StringComparison.Ordinal);
        Assert.Contains("tracing, verbose", error.Message, StringComparison.Ordinal);
    }

    private static void AssertGrowing(RunningTarget target, string key)
    {
        var first = target.NextValue(key);
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (target.NextValue(key) <= first)
            Assert.True(DateTime.UtcNow < deadline, $"{key} does not grow");
    }

    // Off again: the count stops moving (lines printed before the switch may still arrive first).
    private static void AssertSettles(RunningTarget target, string key)
    {
        var deadline = DateTime.UtcNow.AddSeconds(5);
        var previous = target.NextValue(key);
        while (true)
        {
            var now = target.NextValue(key);
            if (now == previous && target.NextValue(key) == now)
                return;
            Assert.True(DateTime.UtcNow < deadline, $"{key} keeps growing");
            previous = now;
        }
    }
}
