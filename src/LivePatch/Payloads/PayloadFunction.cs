using LivePatch.Elf;

namespace LivePatch.Payloads;

/// <summary>One REPLACE record of a payload: the target function to replace and the payload function replacing it.</summary>
public sealed class PayloadFunction
{
    internal PayloadFunction(string oldName, string? oldModule, ElfSymbol symbol, int recordOffset)
    {
        OldName = oldName;
        OldModule = oldModule;
        Symbol = symbol;
        RecordOffset = recordOffset;
    }

    /// <summary>Name of the target's function to replace, without any module part.</summary>
    public string OldName { get; }

    /// <summary>The module named by <c>"module!name"</c>, or null when the record gave a bare name.</summary>
    public string? OldModule { get; }

    /// <summary>Name of the payload's symbol for the new function.</summary>
    public string NewSymbol => Symbol.Name;

    /// <summary>The payload's <c>STT_FUNC</c> symbol for the new function.</summary>
    public ElfSymbol Symbol { get; }

    /// <summary>Offset of the record in <c>.livepatch.funcs</c>, for messages.</summary>
    public int RecordOffset { get; }

    /// <summary>Returns <c>name -&gt; new</c> or <c>module!name -&gt; new</c>.</summary>
    public override string ToString() => $"{(OldModule == null ? "" : OldModule + "!")}{OldName} -> {NewSymbol}";
}
