namespace LivePatch.Sites;

/// <summary>Why a change of build-time sites was refused.</summary>
public enum SiteRefusal
{
    /// <summary>A site holds neither its bytes as built nor the bytes chosen for it: another tool changed it.</summary>
    UnexpectedBytes,
    /// <summary>An alternative's replacement cannot be moved to its site (a branch out of reach, or it does not fit).</summary>
    ReplacementDoesNotFit,
    /// <summary>A call site holds code LivePatch does not write there (not whole instructions, or a call not at its end).</summary>
    NotACallSite,
    /// <summary>The module has no static-key site of that name.</summary>
    UnknownStaticKey,
    /// <summary>Lock prefixes cannot be dropped: more than one thread may run at once (several threads on several CPUs).</summary>
    ThreadsOnSeveralCpus,
    /// <summary>A call site's ops slot changed between the backend's choice and the write (the program was setting its ops table).</summary>
    CallSiteSlotChanged,
}

/// <summary>A change of build-time sites was refused; the message names the site, the process and why. Nothing was written.</summary>
public sealed class SiteRefusedException : LivePatchException
{
    /// <summary>Creates the exception.</summary>
    public SiteRefusedException(SiteRefusal refusal, string message) : base(message) => Refusal = refusal;

    /// <summary>Why the change was refused.</summary>
    public SiteRefusal Refusal { get; }

    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Refused;
}
