namespace LivePatch.Elf;

/// <summary>One RELA relocation entry, with its symbol resolved through the section's symbol table.</summary>
public readonly record struct ElfRelocation
{
    /// <summary>Where to apply it: an offset in the target section (relocatable files) or an address (<c>r_offset</c>).</summary>
    public ulong Offset { get; init; }

    /// <summary>Relocation type (low 32 bits of <c>r_info</c>); unknown types keep their number.</summary>
    public ElfRelocationType Type { get; init; }

    /// <summary>Index of the symbol in the linked symbol table (high 32 bits of <c>r_info</c>); 0 means none.</summary>
    public uint SymbolIndex { get; init; }

    /// <summary>The symbol at <see cref="SymbolIndex"/>, the null symbol when the index is 0.</summary>
    public ElfSymbol Symbol { get; init; }

    /// <summary>The symbol's name, or for a section symbol the name of its section (as readelf shows it).</summary>
    public string SymbolName { get; init; }

    /// <summary>Constant addend (<c>r_addend</c>).</summary>
    public long Addend { get; init; }

    /// <summary>The psABI name of <see cref="Type"/>, such as <c>R_X86_64_PLT32</c>.</summary>
    public string TypeName => ElfInternal.RelocationTypeNames.Of(Type);
}
