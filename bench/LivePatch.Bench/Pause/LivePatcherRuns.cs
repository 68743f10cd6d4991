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
        var patcher = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = options.Timeout });
        try
        {
            result.Attach.Samples.Add(new PauseSample(null, PauseBenchmark.ReadStall(target), Stopwatch.GetElapsedTime(started)));

            // Warm-up, not measured: the first apply JIT-compiles the patcher and creates the target's state record.
            var name = patcher.Apply(payload).Payload;
            patcher.Revert(name);

            for (var run = 0; run < options.Runs; run++)
            {
                cancel.ThrowIfCancellationRequested();
                // Each run loads and applies afresh (a reverted payload is applied again by name, not from its file).
                if (patcher.List().Any(p => p.Name == name))
                    patcher.Unload(name);
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
                    Console.Error.WriteLine($"pause: apply {run + 1} failed: {e.Message}");
                    patcher = Recover(patcher, target, result.Apply, options);
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
                        Console.Error.WriteLine($"pause: revert {run + 1} failed: {e.Message}");
                        patcher = Recover(patcher, target, result.Revert, options);
                        continue;
                    }
                    wall = Stopwatch.GetElapsedTime(started);
                    result.Revert.Samples.Add(new PauseSample(reverted.Pause, PauseBenchmark.ReadStall(target), wall));
                    break;
                }
            }
        }
        finally
        {
            patcher.Dispose();
        }
    }

    /// <summary>
    /// A failed stop must leave every thread running, as before it. The engine's timeout path resumes only the threads
    /// that had stopped: a thread interrupted but not yet stopped enters its stop afterwards and stays there (later
    /// stops re-interrupt it while it is held, so it falls back into a stop after every resume). Count such threads,
    /// then detach and attach again, which releases them, and check that every thread runs.
    /// </summary>
    private static LivePatcher Recover(LivePatcher patcher, PauseTarget target, PauseSeries series, PauseOptions options)
    {
        Thread.Sleep(100);
        var stopped = target.TracingStoppedThreads();
        if (stopped > 0)
        {
            series.LeftStopped += stopped;
            Console.Error.WriteLine($"pause: {stopped} thread(s) still in tracing stop 100 ms after the failed {series.Operation}: {target.ThreadStates()}");
        }
        patcher.Dispose();
        var attached = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = options.Timeout });
        try
        {
            target.Memory.OpenWindow();
            PauseBenchmark.ReadStall(target);
            return attached;
        }
        catch (TimeoutException e)
        {
            attached.Dispose();
            throw new InvalidOperationException($"after a failed {series.Operation} and a fresh attach, the target is not running as before: {e.Message}", e);
        }
    }
}
