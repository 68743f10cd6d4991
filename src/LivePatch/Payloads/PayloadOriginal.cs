namespace LivePatch.Payloads;

/// <summary>
/// One ORIGINAL record (<c>LIVEPATCH_ORIGINAL(old_function, original)</c>): a symbol the payload declares and calls to
/// run the function it replaces; the linker resolves it to that function's trampoline (the displaced instructions,
/// relocated, then a jump back into the old code).
/// </summary>
public sealed class PayloadOriginal
{
    internal PayloadOriginal(string oldName, string? oldModule, string symbol, int recordOffset)
    {
        OldName = oldName;
        OldModule = oldModule;
        Symbol = symbol;
        RecordOffset = recordOffset;
    }

    /// <summary>The replaced function whose original code the symbol runs, without any module part.</summary>
    public string OldName { get; }

    /// <summary>The module the record named, or null for a bare name.</summary>
    public string? OldModule { get; }

    /// <summary>The payload's undefined symbol that resolves to the trampoline (<c>original_compute</c>).</summary>
    public string Symbol { get; }

    /// <summary>The REPLACE record of the same function: its trampoline is the one the symbol resolves to.</summary>
    public PayloadFunction Function { get; internal set; } = null!;

    /// <summary>Offset of the record in <c>.livepatch.funcs</c>, for messages.</summary>
    public int RecordOffset { get; }

    /// <summary>Returns <c>symbol = original of name</c>.</summary>
    public override string ToString() => $"{Symbol} = original of {(OldModule == null ? "" : OldModule + "!")}{OldName}";
}
