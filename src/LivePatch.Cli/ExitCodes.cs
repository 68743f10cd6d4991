namespace LivePatch.Cli;

/// <summary>The exit codes every livepatch command uses; <c>livepatch --help</c> and docs/cli.md list them.</summary>
internal static class ExitCodes
{
    /// <summary>The command did what was asked.</summary>
    public const int Success = 0;

    /// <summary>The command line was wrong (unknown command or option, missing argument).</summary>
    public const int Usage = 1;

    /// <summary>The target process: no such PID, no permission, it exited, or a system call in it failed.</summary>
    public const int Target = 2;

    /// <summary>The input file: a payload or module that is not a valid ELF object, has a malformed table, names an unknown or ambiguous symbol, or cannot be linked.</summary>
    public const int Payload = 3;

    /// <summary>Refused: already applied, not applied, not on top, function too short, already replaced, process busy, code changed by another tool, vetoed by a payload's hook or a hook crashed.</summary>
    public const int Refused = 4;

    /// <summary>Threads did not stop, or one stayed inside a function being patched, until the timeout; or a payload's hook did not return in time.</summary>
    public const int Timeout = 5;

    /// <summary>Interrupted by Ctrl-C or SIGTERM; the action in progress was completed or rolled back first.</summary>
    public const int Interrupted = 130;

    /// <summary>A bug in livepatch; the target was still left running and detached.</summary>
    public const int Internal = 70;

    /// <summary>Every code with its meaning in a few words, in the order <c>livepatch --help</c> lists them.</summary>
    public static readonly IReadOnlyList<(int Code, string Meaning)> Meanings =
    [
        (Success, "success"),
        (Usage, "usage: unknown command or option, missing argument"),
        (Target, "target: no such process, no permission, it exited, a system call in it failed"),
        (Payload, "payload: invalid object or site table, unknown or ambiguous symbol, link error"),
        (Refused, "refused: already applied, not applied, not on top, too short, busy, code changed, build-id, dependency, denied, vetoed by a hook, an interrupted action (livepatch recover first)"),
        (Timeout, "timeout: threads did not stop, or stayed in the code being changed, until --timeout; or a hook did not return"),
        (Internal, "internal error: a bug in livepatch; the target was left running and detached"),
        (Interrupted, "interrupted by Ctrl-C or SIGTERM: the action was completed or rolled back first"),
    ];
}
