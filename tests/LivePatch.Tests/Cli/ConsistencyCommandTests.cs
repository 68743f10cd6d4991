using System.Globalization;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;

namespace LivePatch.Tests.Cli;

/// <summary><c>--consistency=stack</c> on apply and revert, run as an operator runs livepatch.</summary>
[Collection(ProcessTests.Name)]
public class ConsistencyCommandTests
{
    [Fact]
    public void Apply_with_stack_consistency_exits_5_naming_the_thread_and_the_function_then_applies_once_the_thread_left()
    {
        using var sleeping = SleepingTarget.Start();
        var pid = sleeping.Pid.ToString(CultureInfo.InvariantCulture);
        var payload = TestPayloads.Build("live/apply/sleep.c");
        sleeping.WaitUntilInside(1);
        var before = TargetSnapshot.Take(sleeping.Pid, sleeping.Process.ReadyAddress("sleep_inside"));

        var refused = LivepatchCli.Run("apply", pid, payload, "--consistency=stack", "--timeout", "2000");

        Assert.Equal(5, refused.ExitCode);
        Assert.Matches($@"^livepatch: process {pid}: thread {sleeping.Sleeper} has [^ ]+!sleep_inside active: return address .* \(stack consistency\) after \d+ attempts in 2000 ms( \(threads were also slow to stop: [^;]*\))?; nothing was changed$", refused.Error.TrimEnd());
        Assert.Equal("", refused.Output);
        before.AssertUnchanged();

        Assert.Equal(1, sleeping.LeaveInside(1));
        var applied = LivepatchCli.Run("apply", pid, payload, "--consistency", "stack", "--timeout", "2000");
        Assert.Equal(0, applied.ExitCode);
        Assert.StartsWith($"applied sleep to {pid}: ", applied.Output, StringComparison.Ordinal);

        var reverted = LivepatchCli.Run("revert", pid, "sleep", "--consistency=stack", "--timeout", "2000");
        Assert.Equal(0, reverted.ExitCode);
        var wrong = LivepatchCli.Run("revert", pid, "sleep", "--consistency=always");
        Assert.Equal(1, wrong.ExitCode);
    }
}
