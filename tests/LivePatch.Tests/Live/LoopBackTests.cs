using System.Diagnostics;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// targets/loops.c built with -Os: sum_to's loop head is two bytes after its entry, inside the five bytes the jump
/// replaces. A thread in its body would take the loop's branch into the middle of the jump, so the jump is written
/// only while no thread is anywhere in sum_to, and sum_to gets no trampoline (no original).
/// </summary>
[Collection(ProcessTests.Name)]
public class LoopBackTests
{
    private const string Flags = "-Os -g -pthread";

    private static string LoopFix => TestPayloads.Build("live/apply/loop_fix.c");

    [Fact]
    public void Apply_waits_while_a_thread_runs_the_loop_and_names_why_at_the_timeout()
    {
        using var loops = RunningTarget.Start("targets/loops.c", Flags, "2", "long");
        loops.AssertValueBecomes("long", 1);
        var before = TargetSnapshot.Take(loops.Pid, loops.ReadyAddress("sum_to"));
        using var patcher = LivePatcher.Attach(loops.Pid, new LivePatchOptions { Timeout = TimeSpan.FromMilliseconds(500) });

        var check = Assert.Single(patcher.Check(Payload.Load(LoopFix)), r => r.Name.EndsWith("!sum_to", StringComparison.Ordinal) && r.Detail.StartsWith("entry ", StringComparison.Ordinal));
        var error = Assert.Throws<TargetException>(() => patcher.Apply(LoopFix));

        Assert.Contains("its code branches back into the bytes the jump replaces (jmp at +0xd to +0x2)", check.Detail, StringComparison.Ordinal);
        Assert.Equal(TargetError.Timeout, error.Error);
        Assert.Matches(@"thread \d+ is running loops-[0-9A-F]+!sum_to \(rip 0x[0-9a-f]+, offset 0x[0-9a-f]+\); frames loops-[0-9A-F]+!sum_to\+0x[0-9a-f]+ ← [^;]*; its code branches back into the bytes the jump replaces \(jmp at \+0xd to \+0x2\), so no thread may be in it while the jump is written after \d+ attempts", error.Message);
        Assert.Empty(patcher.List());
        before.AssertUnchanged();
        var calls = loops.NextValue("calls");
        Assert.True(loops.NextValue("calls") > calls, "the workers still run");
        Assert.Equal(0, loops.NextValue("wrong"));
    }

    [Fact]
    public void An_original_of_a_function_that_loops_back_is_refused()
    {
        using var loops = RunningTarget.Start("targets/loops.c", Flags, "1");
        using var patcher = LivePatcher.Attach(loops.Pid, Generous.Options);

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(TestPayloads.Build("live/apply/loop_original.c")));

        Assert.Equal(LivePatchRefusal.OriginalUnavailable, error.Refusal);
        Assert.Contains("its code branches back into the bytes the jump replaces (jmp at +0xd to +0x2): the original would run its body and come back into the jump", error.Message, StringComparison.Ordinal);
        Assert.Empty(patcher.List());
    }

    // Eight threads in and out of sum_to all the time: each apply and each revert goes in only at a moment none is in
    // it. Before the guard, a thread stopped in the loop's body crashed or computed garbage once the jump was there.
    [Fact]
    public void A_thousand_apply_revert_cycles_under_eight_threads_compute_no_wrong_result()
    {
        using var loops = RunningTarget.Start("targets/loops.c", Flags, "8");
        var calls = loops.NextValue("calls");
        Assert.True(loops.NextValue("calls") > calls, "the workers run");
        using var patcher = LivePatcher.Attach(loops.Pid, Generous.Options);
        patcher.Load(LoopFix);
        var attempts = 0;
        var clock = Stopwatch.StartNew();

        for (var cycle = 0; cycle < 1000; cycle++)
        {
            attempts += patcher.ApplyLoaded("loop_fix").Attempts;
            attempts += patcher.Revert("loop_fix").Attempts;
        }

        Assert.Equal(0, loops.NextValue("wrong"));
        Assert.True(loops.NextValue("fixed") > 0, "the new sum_to ran between apply and revert");
        calls = loops.NextValue("calls");
        Assert.True(loops.NextValue("calls") > calls, $"the workers still run after 1000 cycles ({attempts} stops, {clock.Elapsed.TotalSeconds:0.0} s)");
    }
}
