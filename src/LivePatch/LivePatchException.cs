namespace LivePatch;

/// <summary>What kind of failure a <see cref="LivePatchException"/> is: callers map a kind to an outcome (the CLI, to an exit code).</summary>
public enum FailureKind
{
    /// <summary>The target process: no such process, no permission, it exited, or a system call in it failed.</summary>
    Target,

    /// <summary>An input the caller gave: a malformed ELF object or site table, a payload that cannot be linked, an unknown or ambiguous symbol, code that cannot be moved or encoded where it was asked to go.</summary>
    Input,

    /// <summary>The action was refused because something it needs does not hold (the message says what); nothing was changed.</summary>
    Refused,

    /// <summary>Threads did not stop, or one stayed in the way, until the timeout; or code run in the target did not return in time.</summary>
    Timeout,
}

/// <summary>
/// The base of every exception LivePatch throws on purpose: its message is one line naming what and where, and
/// <see cref="Kind"/> says which kind of failure it is. Anything else escaping the library is a bug.
/// </summary>
public abstract class LivePatchException : Exception
{
    /// <summary>Creates the exception.</summary>
    protected LivePatchException(string message, Exception? innerException = null) : base(message, innerException)
    {
    }

    /// <summary>What kind of failure this is.</summary>
    public abstract FailureKind Kind { get; }
}
