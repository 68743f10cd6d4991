using LivePatch.Elf;

namespace LivePatch.Payloads;

/// <summary>When a payload's hook runs (<c>LIVEPATCH_PRE_APPLY</c>, <c>_POST_APPLY</c>, <c>_PRE_REVERT</c>, <c>_POST_REVERT</c>).</summary>
public enum PayloadHookKind
{
    /// <summary>Before apply, once the payload is linked into the target and before any thread is stopped; returning non-zero vetoes the apply.</summary>
    PreApply,
    /// <summary>After apply, once the record says the payload is applied.</summary>
    PostApply,
    /// <summary>Before revert, before any thread is stopped; returning non-zero vetoes the revert.</summary>
    PreRevert,
    /// <summary>After revert, once the record says the payload is reverted.</summary>
    PostRevert,
}

/// <summary>One hook record of a payload: a function of the payload the target runs at one step of apply or revert.</summary>
public sealed class PayloadHook
{
    internal PayloadHook(PayloadHookKind kind, ElfSymbol symbol, int recordOffset)
    {
        Kind = kind;
        Symbol = symbol;
        RecordOffset = recordOffset;
    }

    /// <summary>When it runs.</summary>
    public PayloadHookKind Kind { get; }

    /// <summary>The payload's <c>STT_FUNC</c> symbol for the hook.</summary>
    public ElfSymbol Symbol { get; }

    /// <summary>The hook's name.</summary>
    public string Name => Symbol.Name;

    /// <summary>True for the hooks that may veto the action by returning non-zero (pre-apply, pre-revert).</summary>
    public bool CanVeto => Kind is PayloadHookKind.PreApply or PayloadHookKind.PreRevert;

    /// <summary>Offset of the record in <c>.livepatch.funcs</c>, for messages.</summary>
    public int RecordOffset { get; }

    /// <summary>Returns <c>pre-apply check_ready</c>.</summary>
    public override string ToString() => $"{Describe(Kind)} {Name}";

    /// <summary>How messages name a kind of hook: <c>pre-apply</c>, <c>post-apply</c>, <c>pre-revert</c>, <c>post-revert</c>.</summary>
    public static string Describe(PayloadHookKind kind) => kind switch
    {
        PayloadHookKind.PreApply => "pre-apply",
        PayloadHookKind.PostApply => "post-apply",
        PayloadHookKind.PreRevert => "pre-revert",
        _ => "post-revert",
    };
}
