namespace LivePatch.Live;

/// <summary>Settings for a <see cref="LivePatcher"/>.</summary>
public sealed class LivePatchOptions
{
    /// <summary>How long threads may take to stop, and how long to keep retrying while a thread is inside a site (default 30 ms, as Xen).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMilliseconds(30);

    /// <summary>
    /// Cancels an action between its steps and between stop attempts (never inside a stop): the target is left as
    /// it was and <see cref="OperationCanceledException"/> is thrown.
    /// </summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// Told each named step an action reaches (<c>intent-recorded</c>, <c>range-1-written</c>, <c>sites-written</c>,
    /// <c>record-written</c>...): livepatch's crash-safety tests make the process kill itself there.
    /// </summary>
    internal Action<string>? Checkpoint { get; init; }

    /// <summary>
    /// What must hold before functions are redirected or restored: <see cref="ConsistencyModel.Entry"/> (the default)
    /// or <see cref="ConsistencyModel.Stack"/>, which also waits, until the timeout, for no thread to have the code
    /// that becomes inactive running or on its stack.
    /// </summary>
    public ConsistencyModel Consistency { get; init; }

    /// <summary>Apply even when a module's build-id differs from the one the payload was built against; the record says so.</summary>
    public bool Force { get; init; }

    /// <summary>Functions never to patch, as <c>name</c> or <c>module!name</c> (besides those livepatch itself makes the target run).</summary>
    public IReadOnlyList<string> Deny { get; init; } = [];

    /// <summary>
    /// Patch a function even when a copy of its code stays old or changes with it: a gcc clone (<c>.isra</c>,
    /// <c>.constprop</c>, <c>.part</c>) or an inlined copy the payload does not replace, or another name of its body.
    /// What was found is reported either way.
    /// </summary>
    public bool AllowClones { get; init; }

    /// <summary>
    /// Directories of separate debug files (laid out as <c>/usr/lib/debug</c>: <c>.build-id/ab/cdef….debug</c>, or by
    /// <c>.gnu_debuglink</c> name) searched first for the symbols of stripped modules, before <c>LIVEPATCH_DEBUG_DIR</c>'s
    /// and <c>/usr/lib/debug</c>; each must exist.
    /// </summary>
    public IReadOnlyList<string> DebugDirectories { get; init; } = [];

    /// <summary>How long a payload's hook may run in the target before it is abandoned and the action fails (default 1 s).</summary>
    public TimeSpan HookTimeout { get; init; } = TimeSpan.FromSeconds(1);
}
