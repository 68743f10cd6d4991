namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// Between steps, before anything in the target changed: a cancellation says so, in the same words as a
    /// cancellation between stop attempts.
    /// </summary>
    private void ThrowIfCancelled()
    {
        if (_options.Cancellation.IsCancellationRequested)
            throw new OperationCanceledException($"process {Pid}: cancelled before anything was written; nothing was changed", _options.Cancellation);
    }
}
