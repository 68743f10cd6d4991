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
    /// <summary>The record kept in the target cannot be read.</summary>
    StateUnreadable,
    /// <summary>No loaded or reverted payload has that name.</summary>
    NotLoaded,
    /// <summary>A payload of that name is already loaded or was reverted: apply it by name, or unload it first.</summary>
    NameInUse,
    /// <summary>A payload it depends on (<c>LIVEPATCH_DEPENDS</c>) is not applied.</summary>
    DependencyMissing,
    /// <summary>A reverted payload's writable data changed since it was loaded: unload it and load it again.</summary>
    ReloadRequired,
    /// <summary>A module's build-id differs from the one the payload was built against (<c>--force</c> overrides).</summary>
    BuildIdMismatch,
    /// <summary>A function's entry holds neither what its file has nor a payload's jump: another tool changed it.</summary>
    CodeChanged,
    /// <summary>The function is on the deny list, or livepatch itself makes the target run it.</summary>
    Denied,
    /// <summary>The payload is applied: revert it before unloading it.</summary>
    StillApplied,
    /// <summary>The payload's pre-apply or pre-revert hook returned non-zero: the action was not taken.</summary>
    VetoedByHook,
    /// <summary>A hook of the payload crashed in the target; it was abandoned and its thread put back (a post hook's action was still taken).</summary>
    HookFailed,
    /// <summary>The payload calls the original of a function whose displaced instructions cannot be moved to a trampoline.</summary>
    OriginalUnavailable,
    /// <summary>The new code may write registers the old function's callers rely on, and no thunk can keep them (mask registers).</summary>
    CallerRegistersAtRisk,
    /// <summary>An earlier action's livepatch run died before finishing it: run <c>livepatch recover</c> (<see cref="LivePatcher.Recover"/>) first.</summary>
    Interrupted,
    /// <summary>
    /// A GNU indirect function (IFUNC) whose implementation in the process cannot be told for sure (never resolved, or
    /// its slots disagree), or whose replacement would replace other functions too (an implementation they share).
    /// </summary>
    IndirectFunction,
    /// <summary>
    /// A copy of a replaced function's code is not replaced (a gcc clone, or a copy inlined into a function the payload
    /// keeps) or another name shares its body: <see cref="LivePatchOptions.AllowClones"/> (<c>--allow-clones</c>) overrides.
    /// </summary>
    ClonesNotReplaced,
    /// <summary>
    /// The process enforces Intel CET on a thread (a shadow stack, or indirect branch tracking) and the payload needs
    /// what that forbids: a hook call made with ptrace, or (under indirect branch tracking) a trampoline for an original.
    /// </summary>
    ControlFlowEnforcement,
    /// <summary>
    /// The record kept in the target fails a check against what livepatch sees for itself (a site outside a module's
    /// code, bytes that are not the module's or a payload's jump, memory that is not livepatch's): the target's
    /// memory was changed by something else, so nothing the record says is acted on.
    /// </summary>
    RecordInvalid,
}

/// <summary>LivePatch refused an action on payloads; the message names the payload, the function or the process, and why. The target was not changed.</summary>
public sealed class PatchRefusedException : LivePatchException
{
    /// <summary>Creates the exception.</summary>
    public PatchRefusedException(LivePatchRefusal refusal, string message) : base(message) => Refusal = refusal;

    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Refused;

    /// <summary>Why the action was refused.</summary>
    public LivePatchRefusal Refusal { get; }
}
