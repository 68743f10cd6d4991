using System.Diagnostics;
using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>How a stop went: how many threads were held, for how long, and after how many tries.</summary>
/// <param name="Threads">Threads held in the successful stop.</param>
/// <param name="Pause">From the first thread interrupted to the last one resumed, in the successful stop.</param>
/// <param name="Attempts">Stops made, including those retried because a thread was in the way.</param>
/// <param name="Elapsed">The whole operation, retries included.</param>
public sealed record StopReport(int Threads, TimeSpan Pause, int Attempts, TimeSpan Elapsed);

/// <summary>
/// The rendezvous of Xen's livepatch in user space: stop every thread of a target (catching threads created
/// meanwhile), run a short action while they are held, resume them all. When the action says a thread is in
/// the way, everyone is resumed and the stop is tried again until the timeout. Every path resumes every thread.
/// </summary>
internal static class StopTheWorld
{
    /// <summary>The longest wait between two stop attempts.</summary>
    internal static readonly TimeSpan MaxBackoff = TimeSpan.FromMilliseconds(50);

    /// <summary>What the action decided for one stop.</summary>
    internal enum Outcome
    {
        /// <summary>It did its work.</summary>
        Done,
        /// <summary>A thread is in the way: resume everyone and try again.</summary>
        Retry,
    }

    /// <summary>
    /// Runs <paramref name="action"/> with every thread stopped. The action runs on the tracer thread and must be
    /// quick: parsing, linking and buffer preparation belong before. On timeout throws
    /// <see cref="TargetException"/> with <paramref name="describeObstacle"/>'s words.
    /// </summary>
    public static StopReport Run(IPatchTarget target, TimeSpan timeout, Func<IReadOnlyList<StoppedThread>, Outcome> action, Func<string> describeObstacle, CancellationToken cancellation = default)
    {
        return target.OnControlThread(() =>
        {
            var start = Stopwatch.GetTimestamp();
            var deadline = start + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
            var attempts = 0;
            var backoff = TimeSpan.FromMicroseconds(200);
            while (true)
            {
                attempts++;
                var stopStart = Stopwatch.GetTimestamp();
                Outcome outcome;
                int held;
                try
                {
                    IReadOnlyList<StoppedThread> threads;
                    try
                    {
                        threads = target.StopAll(deadline);
                    }
                    catch (TargetException slow) when (slow.Error == TargetError.Timeout && attempts > 1)
                    {
                        // An earlier stop found what stands in the way: name it first, the slow stop second.
                        var prefix = $"process {target.Pid}: ";
                        var detail = slow.Message.StartsWith(prefix, StringComparison.Ordinal) ? slow.Message[prefix.Length..] : slow.Message;
                        throw new TargetException(TargetError.Timeout, target.Pid,
                            $"process {target.Pid}: {describeObstacle()} after {attempts} attempts in {timeout.TotalMilliseconds:0.#} ms (threads were also slow to stop: {detail}); nothing was changed", slow);
                    }
                    held = threads.Count;
                    outcome = action(threads);
                }
                finally
                {
                    target.ResumeAll();
                }
                var stopEnd = Stopwatch.GetTimestamp();
                if (outcome == Outcome.Done)
                    return new StopReport(held, Stopwatch.GetElapsedTime(stopStart, stopEnd), attempts, Stopwatch.GetElapsedTime(start, stopEnd));
                if (cancellation.IsCancellationRequested)
                    throw new OperationCanceledException($"process {target.Pid}: cancelled after {attempts} attempts ({describeObstacle()}); nothing was changed", cancellation);
                if (stopEnd + (long)(backoff.TotalSeconds * Stopwatch.Frequency) > deadline)
                    throw new TargetException(TargetError.Timeout, target.Pid,
                        $"process {target.Pid}: {describeObstacle()} after {attempts} attempts in {timeout.TotalMilliseconds:0.#} ms; nothing was changed");
                Thread.Sleep(backoff);
                // Capped: a long timeout still looks again often, and notices soon that the target went away.
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
            }
        });
    }
}
