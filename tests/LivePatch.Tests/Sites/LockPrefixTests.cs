using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Sites;

namespace LivePatch.Tests.Sites;

[Collection(ProcessTests.Name)]
public sealed class LockPrefixTests : IDisposable
{
    private readonly string _trigger = Path.Combine(Path.GetTempPath(), $"livepatch-trigger-{Guid.NewGuid():N}");

    public void Dispose() => File.Delete(_trigger);

    [Fact]
    public async Task A_single_threaded_process_runs_without_lock_prefixes_until_its_second_thread_which_sees_them_back()
    {
        using var target = RunningTarget.Start("sites/locks_target.c", TestTargets.SitesFlags, _trigger, "thread");
        var site = target.ReadyAddress("lock_site");
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        var dropped = patcher.DropLockPrefixes();

        Assert.True(dropped.Watching, dropped.Reason);
        Assert.Equal((1, 1, 1), (dropped.Sites, dropped.Written, dropped.ThreadsStopped));
        Assert.Equal(0x3e, ByteAt(target.Pid, site));
        AssertCounting(target); // it still counts, uniprocessor style
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var watch = Task.Run(() => patcher.WatchLockPrefixes(timeout.Token));

        await File.WriteAllTextAsync(_trigger, "");
        var result = await watch;

        Assert.Equal("3e", target.WaitForLine(l => l.StartsWith("before=", StringComparison.Ordinal), TimeSpan.FromSeconds(10))[7..]);
        Assert.Equal("f0", target.WaitForLine(l => l.StartsWith("thread-saw=", StringComparison.Ordinal), TimeSpan.FromSeconds(10))[11..]);
        Assert.StartsWith("thread ", result.Reason, StringComparison.Ordinal);
        Assert.Equal(1, result.Restore!.Written);
        Assert.Equal(2, result.Restore.ThreadsStopped);
        Assert.False(patcher.IsWatchingLockPrefixes);
    }

    [Fact]
    public async Task A_forked_child_gets_its_lock_prefixes_back_before_it_runs_while_the_parent_stays_uniprocessor()
    {
        using var target = RunningTarget.Start("sites/locks_target.c", TestTargets.SitesFlags, _trigger, "fork");
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        Assert.True(patcher.DropLockPrefixes().Watching);
        using var stop = new CancellationTokenSource();
        var watch = Task.Run(() => patcher.WatchLockPrefixes(stop.Token));

        await File.WriteAllTextAsync(_trigger, "");

        Assert.Equal("f0", target.WaitForLine(l => l.StartsWith("child-saw=", StringComparison.Ordinal), TimeSpan.FromSeconds(10))[10..]);
        Assert.Equal("3e", target.WaitForLine(l => l.StartsWith("after-fork=", StringComparison.Ordinal), TimeSpan.FromSeconds(10))[11..]);
        Assert.False(watch.IsCompleted);
        await stop.CancelAsync();
        var result = await watch;
        Assert.Equal(1, result.ChildrenRestored);
        Assert.Equal(0xf0, ByteAt(target.Pid, target.ReadyAddress("lock_site")));
    }

    [Fact]
    public void Several_threads_on_several_cpus_keep_their_lock_prefixes()
    {
        using var target = RunningTarget.Start("sites/locks_target.c", TestTargets.SitesFlags, _trigger, "early");
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);

        var error = Assert.Throws<SiteRefusedException>(() => patcher.DropLockPrefixes());

        Assert.Equal(SiteRefusal.ThreadsOnSeveralCpus, error.Refusal);
        Assert.Contains("2 threads", error.Message, StringComparison.Ordinal);
        Assert.Equal(0xf0, ByteAt(target.Pid, target.ReadyAddress("lock_site")));
    }

    [Fact]
    public void Threads_bound_to_one_cpu_run_without_lock_prefixes_and_get_them_back_on_demand()
    {
        var executable = RunningTarget.Build("sites/locks_target.c", TestTargets.SitesFlags);
        using var target = RunningTarget.StartExecutable("taskset", "-c", "0", executable, _trigger, "early");
        var site = target.ReadyAddress("lock_site");
        using (var patcher = SitePatcher.Attach(target.Pid, Generous.Sites))
        {
            var dropped = patcher.DropLockPrefixes();

            Assert.False(dropped.Watching);
            Assert.Equal("every thread is bound to CPU 0", dropped.Reason);
            Assert.Equal(2, dropped.ThreadsStopped);
        }
        Assert.Equal(0x3e, ByteAt(target.Pid, site));
        AssertCounting(target);

        using (var patcher = SitePatcher.Attach(target.Pid, Generous.Sites))
            Assert.Equal(1, patcher.RestoreLockPrefixes().Written);
        Assert.Equal(0xf0, ByteAt(target.Pid, site));
    }

    [Fact]
    public void Detaching_while_watching_puts_the_lock_prefixes_back()
    {
        using var target = RunningTarget.Start("sites/locks_target.c", TestTargets.SitesFlags, _trigger, "thread");
        var site = target.ReadyAddress("lock_site");
        using (var patcher = SitePatcher.Attach(target.Pid, Generous.Sites))
        {
            Assert.True(patcher.DropLockPrefixes().Watching);
            Assert.Equal(0x3e, ByteAt(target.Pid, site));
        }

        Assert.Equal(0xf0, ByteAt(target.Pid, site));
        Assert.Equal(0, RunningTarget.TracerProcess(target.Pid));
        File.WriteAllText(_trigger, "");
        Assert.Equal("f0", target.WaitForLine(l => l.StartsWith("thread-saw=", StringComparison.Ordinal), TimeSpan.FromSeconds(10))[11..]);
    }

    private static void AssertCounting(RunningTarget target)
    {
        var first = target.NextValue("count");
        Assert.True(target.NextValue("count") > first);
    }

    private static byte ByteAt(int pid, ulong address)
    {
        using var process = TargetProcess.Open(pid);
        return process.ReadMemory(address, 1)[0];
    }
}
