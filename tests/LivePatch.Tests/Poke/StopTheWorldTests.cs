using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Poke;

[Collection(ProcessTests.Name)]
public partial class StopTheWorldTests
{
    // The first stop finds an obstacle; then a thread waits in vfork(), where no interrupt stops it, so a later stop
    // runs out of time. The message names the obstacle first (what blocked), then the slow stop.
    [Fact]
    public void A_stop_that_times_out_after_an_obstacle_was_seen_names_the_obstacle_and_the_slow_threads()
    {
        using var target = RunningTarget.Start("targets/vforking.c", "-O2 -pthread");
        var forker = int.Parse(ForkerPattern().Match(target.Ready).Groups[1].Value, CultureInfo.InvariantCulture);
        using var memory = TargetProcess.Open(target.Pid);
        using (var process = AttachedProcess.Attach(target.Pid))
        {
            var error = Assert.Throws<TargetException>(() => StopTheWorld.Run(process, Generous.Timeout, _ =>
            {
                memory.WriteMemory(target.ReadyAddress("go"), BitConverter.GetBytes(1)); // once resumed, the forker vforks
                return StopTheWorld.Outcome.Retry;
            }, () => "thread 1 is in the way"));

            Assert.Equal(TargetError.Timeout, error.Error);
            Assert.Matches($@"^process {target.Pid}: thread 1 is in the way after \d+ attempts in {Generous.Timeout.TotalMilliseconds} ms \(threads were also slow to stop: thread\(s\) {forker} \(.+\) did not stop before the timeout\); nothing was changed$", error.Message);
            Assert.Equal(TargetError.Timeout, Assert.IsType<TargetException>(error.InnerException).Error);

            // The child exits, vfork() returns and the forker enters the stop still asked of it: detach collects it.
            memory.WriteMemory(target.ReadyAddress("release"), BitConverter.GetBytes(1));
        }

        target.WaitForLine(l => l == "vforked", TimeSpan.FromSeconds(10));

        Assert.Equal(0, RunningTarget.TracerProcess(target.Pid));
        var tick = target.NextValue("tick");
        Assert.True(target.NextValue("tick") > tick, "the target still runs");
    }

    [GeneratedRegex(@"\bforker=(\d+)")]
    private static partial Regex ForkerPattern();
}
