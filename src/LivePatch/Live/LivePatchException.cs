namespace LivePatch.Live;

/// <summary>Why LivePatch refused an action on a target.</summary>
public enum LivePatchRefusal
{
    /// <summary>A payload of that name is already applied.</summary>
    AlreadyApplied,
    /// <summary>No applied payload has that name.</summary>
    NotApplied,
    /// <summary>Another payload was applied after this one; it must be reverted first.</summary>
    NotOnTop,
    /// <summary>The old function is too short for a 5-byte jump.</summary>
    FunctionTooShort,
    /// <summary>The old name is not a function.</summary>
    NotAFunction,
    /// <summary>An applied payload already replaces that function.</summary>
    AlreadyReplaced,
    /// <summary>The record kept in the target cannot be read.</summary>
    StateUnreadable,
    /// <summary>The module has no static-key site of that name.</summary>
    UnknownStaticKey,
    /// <summary>Lock prefixes cannot be dropped: more than one thread may run at once (several threads on several CPUs).</summary>
    ThreadsOnSeveralCpus,
    /// <summary>A call site's ops slot changed between the backend's choice and the write (the program was setting its ops table).</summary>
    CallSiteSlotChanged,
}

/// <summary>LivePatch refused an action; the message names the payload, the function or the process, and why. The target was not changed.</summary>
public sealed class LivePatchException : Exception
{
    /// <summary>Creates the exception.</summary>
    public LivePatchException(LivePatchRefusal refusal, string message) : base(message) => Refusal = refusal;

    /// <summary>Why the action was refused.</summary>
    public LivePatchRefusal Refusal { get; }
}
