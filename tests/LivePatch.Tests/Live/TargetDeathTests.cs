using System.Diagnostics;
using System.Globalization;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using Xunit.Abstractions;

namespace LivePatch.Tests.Live;

/// <summary>
/// The target killed (SIGKILL) at random instants while an action runs on it — attach, apply, revert, replace,
/// unload, a hook: the action either finished before the kill, or ends promptly with the one error that says the
/// process exited (<see cref="TargetError.Exited"/>, exit 2), never a hang, a timeout or another cause.
/// </summary>
[Collection(ProcessTests.Name)]
public class TargetDeathTests(ITestOutputHelper output)
{
    private const string TrioFlags = "-O2 -g -pthread -fcf-protection=full";

    // No trial may take this long after the kill: a hang fails the test instead of stalling the suite.
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(20);

    private static readonly Lazy<string> FixObject = new(() => TestPayloads.Build("live/crash/trio_fix.c"));
    private static readonly Lazy<string> NextObject = new(() => TestPayloads.Build("live/crash/trio_next.c"));
    private static readonly Lazy<string> HookObject = new(() => TestPayloads.Build("live/hooks/steps.c"));

    [Theory]
    [InlineData("apply", 45)]
    [InlineData("revert", 40)]
    [InlineData("replace", 40)]
    [InlineData("unload", 40)]
    [InlineData("hooks", 40)]
    public void The_target_killed_at_a_random_instant_ends_the_action_at_once_saying_it_exited(string action, int trials)
    {
        var random = new Random(action.GetHashCode(StringComparison.Ordinal) ^ Environment.ProcessId);
        // Kills land uniformly within the median time the action took so far (undisturbed first, then when it
        // finished before its kill): about half of them before it ends, whatever the machine's load.
        var durations = new List<TimeSpan> { Calibrate(action) };
        var afterKill = new List<double>();
        var finished = 0;
        for (var trial = 0; trial < trials; trial++)
        {
            var window = durations.Order().ElementAt(durations.Count / 2);
            var delay = TimeSpan.FromTicks((long)(random.NextDouble() * window.Ticks));
            var (outcome, took, sinceKill) = Trial(action, delay);
            if (outcome is null)
            {
                finished++;
                if (sinceKill is null)
                    durations.Add(took);
            }
            else
            {
                var exited = outcome as TargetException;
                Assert.True(exited?.Error is TargetError.Exited or TargetError.NotFound,
                    $"trial {trial} ({action}, killed after {delay.TotalMilliseconds:0.0} ms): {outcome.GetType().Name}: {outcome.Message}");
                Assert.True(System.Text.RegularExpressions.Regex.IsMatch(exited!.Message, @"^(process \d+ exited( \(killed by SIGKILL\))?|no process with PID \d+)"),
                    $"trial {trial} ({action}): the message does not say the process ended: {exited.Message}");
                Assert.DoesNotContain('\n', exited.Message);
            }
            if (sinceKill is { } ended)
                afterKill.Add(ended.TotalMilliseconds);
        }
        afterKill.Sort();
        var p99 = afterKill.Count == 0 ? 0 : afterKill[(int)Math.Ceiling(afterKill.Count * 0.99) - 1];
        output.WriteLine($"{action}: {trials} kills, {finished} finished first (median action {durations.Order().ElementAt(durations.Count / 2).TotalMilliseconds:0} ms); " +
            $"after the kill: median {(afterKill.Count == 0 ? 0 : afterKill[afterKill.Count / 2]):0.0} ms, p99 {p99:0.0} ms, max {(afterKill.Count == 0 ? 0 : afterKill[^1]):0.0} ms");
        // Generous for a loaded machine; docs/reliability.md has the figures of an idle one.
        Assert.True(p99 < 1000, $"{action}: livepatch took {p99:0} ms after the kill at the 99th percentile");
        Assert.True(trials - finished >= trials / 4, $"only {trials - finished} of {trials} kills landed before {action} ended: the window is too short to test anything");
    }

    // How long the action takes on an undisturbed target (the second time: the first one compiles the code).
    private static TimeSpan Calibrate(string action)
    {
        var took = TimeSpan.Zero;
        for (var run = 0; run < 2; run++)
        {
            using var target = Start(action);
            Prepare(target, action);
            var watch = Stopwatch.StartNew();
            Run(target.Pid, action);
            took = watch.Elapsed;
        }
        return took;
    }

    /// <summary>One kill: the action's exception (null when it finished), how long it took, and how long after the kill it ended (null when it ended first).</summary>
    private static (Exception? Outcome, TimeSpan Took, TimeSpan? SinceKill) Trial(string action, TimeSpan delay)
    {
        using var target = Start(action);
        Prepare(target, action);
        long killedAt = 0;
        using var start = new ManualResetEventSlim();
        var killer = new Thread(() =>
        {
            start.Wait();
            var until = Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);
            while (Stopwatch.GetTimestamp() < until)
                Thread.SpinWait(50);
            if (Libc.Kill(target.Pid, 9) != 0)
                throw new InvalidOperationException($"kill({target.Pid}, SIGKILL) failed");
            Volatile.Write(ref killedAt, Stopwatch.GetTimestamp());
        }) { IsBackground = true };
        killer.Start();
        var began = Stopwatch.GetTimestamp();
        var run = Task.Factory.StartNew(() =>
        {
            start.Set();
            Run(target.Pid, action);
        }, TaskCreationOptions.LongRunning);
        Exception? outcome = null;
        try
        {
            if (!run.Wait(Hang))
                Assert.Fail($"{action} still runs {Hang.TotalSeconds:0} s after the target was killed");
        }
        catch (AggregateException error)
        {
            outcome = error.InnerException;
        }
        var ended = Stopwatch.GetTimestamp();
        killer.Join();
        var killed = Volatile.Read(ref killedAt);
        return (outcome, Stopwatch.GetElapsedTime(began, ended), killed != 0 && killed < ended ? Stopwatch.GetElapsedTime(killed, ended) : null);
    }

    private static RunningTarget Start(string action) => action == "hooks"
        ? RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "6")
        : RunningTarget.Start("targets/trio.c", TrioFlags, "6");

    private static void Prepare(RunningTarget target, string action)
    {
        if (action is "apply" or "hooks")
            return;
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        patcher.Apply(Payload.Load(FixObject.Value));
        if (action == "unload")
            patcher.Revert("trio_fix");
    }

    private static void Run(int pid, string action)
    {
        using var patcher = LivePatcher.Attach(pid, Generous.Options);
        _ = action switch
        {
            "apply" => (object)patcher.Apply(Payload.Load(FixObject.Value)),
            "revert" => patcher.Revert("trio_fix"),
            "replace" => patcher.Replace(Payload.Load(NextObject.Value)),
            "unload" => patcher.Unload("trio_fix"),
            "hooks" => patcher.Apply(Payload.Load(HookObject.Value)),
            _ => throw new ArgumentException(action, nameof(action)),
        };
    }

    private static class Libc
    {
        [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        public static extern int Kill(int pid, int signal);
    }
}
