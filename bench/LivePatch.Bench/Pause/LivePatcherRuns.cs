using System.Diagnostics;
using LivePatch.Live;
using LivePatch.Targets;

namespace LivePatch.Bench.Pause;

/// <summary>Our side of the benchmark: apply and revert the payload, each inside its own measurement window.</summary>
internal static class LivePatcherRuns
{
    public static void Measure(PauseTarget target, string payload, ThreadCountResult result, PauseOptions options, CancellationToken cancel)
    {
        var started = Stopwatch.GetTimestamp();
        target.Memory.OpenWindow();
        using var patcher = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = TimeSpan.FromMilliseconds(30) });
        result.Attach.Samples.Add(new PauseSample(null, PauseBenchmark.ReadStall(target), Stopwatch.GetElapsedTime(started)));

        // Warm-up, not measured: the first apply JIT-compiles the patcher and creates the target's state record.
        var name = patcher.Apply(payload).Payload;
        patcher.Revert(name);

        for (var run = 0; run < options.Runs; run++)
        {
            cancel.ThrowIfCancellationRequested();
            started = Stopwatch.GetTimestamp();
            target.Memory.OpenWindow();
            ApplyReport applied;
            try
            {
                applied = patcher.Apply(payload);
            }
            catch (TargetException e) when (e.Error == TargetError.Timeout)
            {
                // A stop that timed out changed nothing: count it and go on; anything else ends the benchmark.
                result.Apply.Fail(e.Message);
                continue;
            }
            var wall = Stopwatch.GetElapsedTime(started);
            result.Apply.Samples.Add(new PauseSample(applied.Pause, PauseBenchmark.ReadStall(target), wall));

            for (var attempt = 0; ; attempt++)
            {
                cancel.ThrowIfCancellationRequested();
                started = Stopwatch.GetTimestamp();
                target.Memory.OpenWindow();
                RevertReport reverted;
                try
                {
                    reverted = patcher.Revert(applied.Payload);
                }
                catch (TargetException e) when (e.Error == TargetError.Timeout && attempt < 10)
                {
                    // The payload is still applied: the next Apply would be refused, so revert until it works.
                    result.Revert.Fail(e.Message);
                    continue;
                }
                wall = Stopwatch.GetElapsedTime(started);
                result.Revert.Samples.Add(new PauseSample(reverted.Pause, PauseBenchmark.ReadStall(target), wall));
                break;
            }
        }
    }
}
