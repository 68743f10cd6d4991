namespace LivePatch.Targets;

/// <summary>Why a process could not be used as a target.</summary>
public enum TargetError
{
    /// <summary>No process has that PID.</summary>
    NotFound,
    /// <summary>The caller may not trace or write the process.</summary>
    PermissionDenied,
    /// <summary>Another tracer (another livepatch, a debugger) holds the process.</summary>
    Busy,
    /// <summary>The process exited or was killed during the operation.</summary>
    Exited,
    /// <summary>Some threads did not stop, or stayed inside code being changed, until the timeout.</summary>
    Timeout,
    /// <summary>A system call made in or on the target failed.</summary>
    SystemCallFailed,
}

/// <summary>A process could not be read, traced, stopped or changed; the message names the process and the cause.</summary>
public sealed class TargetException : LivePatchException
{
    /// <summary>A timeout is <see cref="FailureKind.Timeout"/>; a process held by another tracer is <see cref="FailureKind.Refused"/>; the rest is <see cref="FailureKind.Target"/>.</summary>
    public override FailureKind Kind => Error switch
    {
        TargetError.Timeout => FailureKind.Timeout,
        TargetError.Busy => FailureKind.Refused,
        _ => FailureKind.Target,
    };

    /// <summary>Creates the exception.</summary>
    public TargetException(TargetError error, int pid, string message) : base(message)
    {
        Error = error;
        Pid = pid;
    }

    /// <summary>Creates the exception with the exception that caused it.</summary>
    public TargetException(TargetError error, int pid, string message, Exception inner) : base(message, inner)
    {
        Error = error;
        Pid = pid;
    }

    /// <summary>What kind of failure it was.</summary>
    public TargetError Error { get; }

    /// <summary>The target's process id.</summary>
    public int Pid { get; }

    internal static TargetException NotFound(int pid) => new(TargetError.NotFound, pid, $"no process with PID {pid}");
}
