namespace LivePatch.Cli;

/// <summary>The exit codes every livepatch command uses; docs/cli.md lists them.</summary>
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

    /// <summary>The help text that lists the codes.</summary>
    public const string Help = "Exit codes: 0 success, 1 usage, 2 target (no such process, no permission, exited), 3 payload (invalid object, unknown or ambiguous symbol, link error), 4 refused (already applied, not applied, not on top, too short, busy, code changed, build-id, dependency, vetoed by a hook, interrupted action: recover first), 5 timeout, 130 interrupted, 70 internal error.";
}
