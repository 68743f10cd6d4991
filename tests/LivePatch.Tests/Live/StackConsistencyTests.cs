using LivePatch.Live;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// <see cref="ConsistencyModel.Stack"/> on targets/sleeping.c: its sleeper thread waits in nanosleep inside
/// sleep_inside() (a return address into it on its stack, its RIP in libc) until the test lets it leave.
/// </summary>
[Collection(ProcessTests.Name)]
public class StackConsistencyTests
{
    // The refusals wait the generous timeout: with a short one a loaded machine can run out of time in the first stop,
    // before anything saw the thread the test is about.
    private static LivePatchOptions Stack(TimeSpan timeout) => new() { Timeout = timeout, Consistency = ConsistencyModel.Stack };

    [Fact]
    public async Task Apply_fails_while_a_thread_sleeps_inside_the_old_function_and_succeeds_once_it_leaves()
    {
        using var sleeping = SleepingTarget.Start();
        var payload = TestPayloads.Build("live/apply/sleep.c");
        sleeping.WaitUntilInside(1);
        var before = TargetSnapshot.Take(sleeping.Pid, sleeping.Process.ReadyAddress("sleep_inside"));

        using (var patcher = LivePatcher.Attach(sleeping.Pid, Stack(Generous.Options.Timeout)))
        {
            var error = Assert.Throws<TargetException>(() => patcher.Apply(payload));

            Assert.Equal(TargetError.Timeout, error.Error);
            // The frames the unwinder went through name where the thread is: libc's nanosleep, called by poll_for, by sleep_inside.
            Assert.Matches($@"thread {sleeping.Sleeper} has [^ ]+!sleep_inside active: return address 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\) of frame #\d+; frames .* ← [^ ]+!poll_for\+0x[0-9a-f]+ ← [^ ]+!sleep_inside\+0x[0-9a-f]+ ← [^ ]+!sleeper\+0x[0-9a-f]+ ← .* \(stack consistency\) after \d+ attempts", error.Message);
            Assert.EndsWith("nothing was changed", error.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
            before.AssertUnchanged();
        }

        // A longer timeout: apply retries while the thread is inside and goes through once the trigger lets it leave.
        using var patient = LivePatcher.Attach(sleeping.Pid, Stack(TimeSpan.FromSeconds(20)));
        var applying = Task.Run(() => patient.Apply(payload));
        await Task.Delay(300);
        Assert.False(applying.IsCompleted, "apply waits while the thread is inside sleep_inside");
        var left = sleeping.LeaveInside(1);
        var applied = await applying;

        Assert.Equal(1, left); // the old function finished before the jump was written
        Assert.True(applied.Attempts > 1, $"{applied.Attempts} attempts");
        sleeping.LeaveOutside(2);
        Assert.Equal(100, sleeping.LeaveInside(2)); // the next call went to the new function
    }

    // The same situation under the default model: apply goes through at once and the thread finishes the old body.
    [Fact]
    public async Task Entry_consistency_applies_while_the_thread_is_inside_and_stack_consistency_reverts_only_once_it_leaves_the_new_function()
    {
        using var sleeping = SleepingTarget.Start();
        var payload = TestPayloads.Build("live/apply/sleep.c");
        sleeping.WaitUntilInside(1);

        using (var patcher = LivePatcher.Attach(sleeping.Pid, Generous.Options))
            Assert.Equal(1, patcher.Apply(payload).Attempts);
        Assert.Equal(1, sleeping.LeaveInside(1)); // it was inside the old function, and stayed there until now
        sleeping.LeaveOutside(2); // now inside sleep_inside_fixed

        using (var patcher = LivePatcher.Attach(sleeping.Pid, Stack(Generous.Options.Timeout)))
        {
            var error = Assert.Throws<TargetException>(() => patcher.Revert("sleep"));

            Assert.Equal(TargetError.Timeout, error.Error);
            Assert.Contains($"thread {sleeping.Sleeper} has sleep_inside_fixed of payload 'sleep' active: return address", error.Message, StringComparison.Ordinal);
            Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
        }

        using var patient = LivePatcher.Attach(sleeping.Pid, Stack(TimeSpan.FromSeconds(20)));
        var reverting = Task.Run(() => patient.Revert("sleep"));
        await Task.Delay(300);
        Assert.False(reverting.IsCompleted, "revert waits while the thread is inside sleep_inside_fixed");
        Assert.Equal(100, sleeping.LeaveInside(2));
        var reverted = await reverting;

        Assert.True(reverted.Attempts > 1, $"{reverted.Attempts} attempts");
        sleeping.LeaveOutside(3);
        Assert.Equal(1, sleeping.LeaveInside(3)); // the old function again
    }

    // The ranges revert looks for: a payload's text split at its new functions, each piece named for messages.
    [Fact]
    public void A_payload_text_is_split_at_its_new_functions()
    {
        var payload = new AppliedPayloadInfo("fix", "/fix.o", PayloadState.Applied, DateTimeOffset.UnixEpoch, null, 0, 1,
            [
                new AppliedFunctionInfo("w!b", 0x500, 0x500, "b_fixed", 0x1040, [], []),
                new AppliedFunctionInfo("w!a", 0x400, 0x404, "a_fixed", 0x1010, [], []),
            ],
            [new MappedBlock(0x1000, 0x1000, "text"), new MappedBlock(0x3000, 0x1000, "rodata")]);

        var ranges = StackConsistency.ForRevert(payload);

        Assert.Equal(
            ["payload 'fix' text 1000-1010", "a_fixed of payload 'fix' 1010-1040", "b_fixed of payload 'fix' 1040-2000"],
            ranges.Select(r => $"{r.Name} {r.Start:x}-{r.End:x}"));
        Assert.All(ranges, r => Assert.Equal(r.Start, r.ActiveFrom));
    }

    [Fact]
    public void Overlapping_ranges_are_refused()
    {
        using var self = TargetProcess.Open(Environment.ProcessId);

        var error = Assert.Throws<ArgumentException>(() => new StackScanner(self, [new CodeRange(0x1000, 0x1100, 0x1000, "a"), new CodeRange(0x10f0, 0x1200, 0x10f0, "b")]));

        Assert.Contains("code ranges a and b overlap at 0x10f0", error.Message, StringComparison.Ordinal);
    }
}
