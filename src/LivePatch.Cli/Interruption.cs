using System.Runtime.InteropServices;

namespace LivePatch.Cli;

/// <summary>
/// Ctrl-C and SIGTERM must not kill livepatch in the middle of an action (threads would stay seized until the kernel
/// detaches them): the signal is noted, the action runs to its end or rolls back within its timeout, and the command
/// then exits with <see cref="ExitCodes.Interrupted"/>.
/// </summary>
internal sealed class Interruption : IDisposable
{
    private readonly PosixSignalRegistration _interrupt;
    private readonly PosixSignalRegistration _terminate;
    private volatile bool _requested;

    public Interruption()
    {
        _interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Note);
        _terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Note);
    }

    public bool Requested => _requested;

    public void Dispose()
    {
        _interrupt.Dispose();
        _terminate.Dispose();
    }

    private void Note(PosixSignalContext context)
    {
        context.Cancel = true;
        _requested = true;
    }
}
