using System.Runtime.InteropServices;

namespace LivePatch.Cli;

/// <summary>
/// Ctrl-C and SIGTERM must not kill livepatch in the middle of an action (threads would stay seized until the kernel
/// detaches them): the signal cancels the action at its next safe point (never inside a stop), everything is resumed
/// and detached, and the command exits with <see cref="ExitCodes.Interrupted"/>.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;
    private readonly CancellationTokenSource _cancellation = new();

    public Interruption()
    {
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Note);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Note);
    }

    public bool Requested => _cancellation.IsCancellationRequested;

    /// <summary>Cancelled by the first signal: the library stops between steps, leaving the target as it was.</summary>
    public CancellationToken Token => _cancellation.Token;

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
        _cancellation.Dispose();
    }

    private void Note(PosixSignalContext context)
    {
        context.Cancel = true;
        _cancellation.Cancel();
    }
}
