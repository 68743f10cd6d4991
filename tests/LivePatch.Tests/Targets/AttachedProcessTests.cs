using System.Diagnostics;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

/// <summary>
/// <see cref="AttachedProcess"/> on targets/worker.c: short jobs on one stopped thread, nested in each other or inside
/// a stop of every thread, never let a thread go early; the work registered to run before detaching runs, newest
/// first, whatever fails; memory mapped through the seam is where it was asked and goes away when unmapped.
/// </summary>
[Collection(ProcessTests.Name)]
public class AttachedProcessTests
{
    private static long Deadline() => Stopwatch.GetTimestamp() + (long)(Generous.Timeout.TotalSeconds * Stopwatch.Frequency);

    [Fact]
    public void A_job_nested_in_another_uses_the_same_thread_and_resumes_nobody_until_the_outer_one_ends()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var process = AttachedProcess.Attach(worker.Pid);

        var (outer, inner, stoppedAfterInner) = process.WithOneThreadStopped(tid =>
        {
            var nested = process.WithOneThreadStopped(t => t);
            return (tid, nested, worker.ThreadStates()[tid]);
        });

        Assert.Equal(worker.Pid, outer); // the main thread, when it can
        Assert.Equal(outer, inner);
        Assert.Equal("t", stoppedAfterInner);
        AssertEveryThreadRuns(worker);
    }

    [Fact]
    public void A_job_inside_a_stop_of_every_thread_resumes_nobody()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var process = AttachedProcess.Attach(worker.Pid);

        var states = process.OnControlThread(() =>
        {
            var threads = process.StopAll(Deadline());
            try
            {
                var used = process.WithOneThreadStopped(tid => tid);
                Assert.Contains(threads, t => t.Tid == used);
                return threads.Select(t => worker.ThreadStates()[t.Tid]).ToList();
            }
            finally
            {
                process.ResumeAll();
            }
        });

        Assert.Equal(3, states.Count);
        Assert.All(states, state => Assert.Equal("t", state));
        AssertEveryThreadRuns(worker);
    }

    [Fact]
    public void Work_before_detach_runs_newest_first_and_a_failure_does_not_stop_the_detach()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var ran = new List<string>();
        var process = AttachedProcess.Attach(worker.Pid);
        process.BeforeDetach(() => ran.Add("first"));
        process.BeforeDetach(() => throw new TargetException(TargetError.Exited, worker.Pid, "gone"));
        process.BeforeDetach(() => ran.Add(process.Detaching.IsCancellationRequested ? "last, watches told to end" : "last"));
        Assert.Equal(Environment.ProcessId, RunningTarget.TracerProcess(worker.Pid));

        process.Dispose();

        Assert.Equal(["last, watches told to end", "first"], ran);
        Assert.Equal(0, RunningTarget.TracerProcess(worker.Pid));
        AssertEveryThreadRuns(worker);
    }

    [Fact]
    public void Memory_mapped_near_an_address_is_within_reach_and_goes_away_when_unmapped()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var process = AttachedProcess.Attach(worker.Pid);
        var near = process.Process.MainModule.Start;

        var block = process.MapNear(near, near + 5, 4096, MemoryProtection.Read | MemoryProtection.Write);
        process.WriteMemory(block, [1, 2, 3]);
        var shared = process.CreateSharedMemory("livepatch-test", 8192);

        Assert.True((block > near ? block - near : near - block) < (2UL << 30), $"0x{block:x} is out of rel32 reach of 0x{near:x}");
        Assert.Equal([1, 2, 3], process.ReadMemory(block, 3));
        var named = Assert.Single(process.Process.ReadMemoryMap().Regions, r => r.Path.StartsWith("/memfd:livepatch-test", StringComparison.Ordinal));
        Assert.Equal((shared, 8192UL), (named.Start, named.Size));

        process.Unmap(block, 4096);
        process.Unmap(shared, 8192);

        var map = process.Process.ReadMemoryMap();
        Assert.Null(map.Find(block));
        Assert.Null(map.Find(shared));
        AssertEveryThreadRuns(worker);
    }

    private static void AssertEveryThreadRuns(RunningTarget worker)
    {
        var calls = worker.NextValue("calls");
        Assert.True(worker.NextValue("calls") > calls, "the workers still run");
        Assert.DoesNotContain("t", worker.ThreadStates().Values);
    }
}
