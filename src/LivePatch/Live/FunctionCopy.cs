namespace LivePatch.Live;

/// <summary>How a replaced function's code exists besides the body its entry jump redirects.</summary>
public enum FunctionCopyKind
{
    /// <summary>A copy gcc made (<c>.isra.N</c>, <c>.constprop.N</c>, <c>.part.N</c>), or the function a replaced clone was made from: callers may run it instead.</summary>
    Clone,
    /// <summary>Another function symbol at the same address (<c>__attribute__((alias))</c>, identical code folding): the jump changes it too.</summary>
    Alias,
    /// <summary>A <c>.cold</c> part split off the function (or off one of its clones): run only from its own function, so never refused.</summary>
    SplitPart,
    /// <summary>A copy inlined into another function, as the module's DWARF records it: that caller keeps running it.</summary>
    Inlined,
}

/// <summary>One copy of a replaced function's code, found from the module's symbols or its DWARF.</summary>
/// <param name="Function">The replaced function, <c>module!name</c>.</param>
/// <param name="Kind">What the copy is.</param>
/// <param name="Copy">The clone, split part or alias, <c>module!name</c>; for an inlined copy, the function it was inlined into, or null when no symbol holds its address.</param>
/// <param name="Address">The copy's address in the process (an inlined copy's entry; 0 when its DWARF gives none).</param>
/// <param name="Replaced">True when the payload replaces the copy too (for an inlined copy: the function holding it).</param>
public sealed record FunctionCopy(string Function, FunctionCopyKind Kind, string? Copy, ulong Address, bool Replaced)
{
    /// <summary>True when patching <see cref="Function"/> alone leaves the program running old code, or changes another name: refused unless allowed.</summary>
    public bool IsMissed => !Replaced && Kind != FunctionCopyKind.SplitPart;

    /// <summary>One phrase for messages: <c>app!scale has clone app!scale.constprop.0 at 0x...</c>.</summary>
    public string Describe() => Kind switch
    {
        FunctionCopyKind.Clone when Function.StartsWith(Copy + ".", StringComparison.Ordinal) => $"{Function} is a clone of {Copy} at 0x{Address:x}",
        FunctionCopyKind.Clone => $"{Function} has clone {Copy} at 0x{Address:x}",
        FunctionCopyKind.Alias => $"{Function} is also named {Copy} (one body at 0x{Address:x})",
        FunctionCopyKind.SplitPart => $"{Function} has split part {Copy} at 0x{Address:x}",
        _ => $"{Function} is inlined into {Copy ?? "code of no symbol"}{(Address == 0 ? "" : $" at 0x{Address:x}")}",
    };

    /// <summary>What it means for the patch: replaced too, run only from its function, or what stays old.</summary>
    public string Consequence() => (Kind, Replaced) switch
    {
        (FunctionCopyKind.SplitPart, _) => "run only from its own function",
        (FunctionCopyKind.Inlined, true) => "that caller is replaced too",
        (_, true) => "replaced too",
        (FunctionCopyKind.Clone, false) => "not replaced: its callers keep running the old code",
        (FunctionCopyKind.Alias, false) => "the jump changes it too",
        _ => "not replaced: that caller keeps running the old code",
    };
}
