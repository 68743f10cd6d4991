using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>What every part of a payload action works with: the attached process and the run's options.</summary>
internal sealed class LiveSession(AttachedProcess process, LivePatchOptions options)
{
    public AttachedProcess Process => process;

    /// <summary>The process's modules, symbols, memory map and memory.</summary>
    public TargetProcess Target => process.Process;

    public LivePatchOptions Options => options;

    public int Pid => process.Pid;

    /// <summary>Tells the crash-safety tests that an action reached <paramref name="step"/>.</summary>
    public void Checkpoint(string step) => options.Checkpoint?.Invoke(step);

    /// <summary>
    /// Between steps, before anything in the target changed: a cancellation says so, in the same words as a
    /// cancellation between stop attempts.
    /// </summary>
    public void ThrowIfCancelled()
    {
        if (options.Cancellation.IsCancellationRequested)
            throw new OperationCanceledException($"process {Pid}: cancelled before anything was written; nothing was changed", options.Cancellation);
    }

    /// <summary>How to poke for this run: its timeout and cancellation, and the crash-safety checkpoint after each range.</summary>
    public PokeOptions PokeOptions(Func<IReadOnlyList<StoppedThread>, string?>? findObstacle = null) => new()
    {
        Timeout = options.Timeout,
        Cancellation = options.Cancellation,
        FindObstacle = findObstacle,
        RangeWritten = n => Checkpoint($"range-{n}-written"),
    };
}
