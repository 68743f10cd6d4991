namespace LivePatch.Elf;

/// <summary>One entry of a symbol table (<c>.symtab</c> or <c>.dynsym</c>).</summary>
public readonly record struct ElfSymbol
{
    /// <summary>Section index of an undefined symbol (<c>SHN_UNDEF</c>).</summary>
    public const uint UndefinedSection = 0;

    /// <summary>Section index of an absolute symbol, whose value is not relocated (<c>SHN_ABS</c>).</summary>
    public const uint AbsoluteSection = 0xfff1;

    /// <summary>Section index of a common block not yet allocated (<c>SHN_COMMON</c>).</summary>
    public const uint CommonSection = 0xfff2;

    /// <summary>Position of this entry in its symbol table; entry 0 is the null symbol.</summary>
    public int Index { get; init; }

    /// <summary>Symbol name without any version suffix; empty for section symbols and the null symbol.</summary>
    public string Name { get; init; }

    /// <summary>Value: an address in linked files, an offset in its section in relocatable ones (<c>st_value</c>).</summary>
    public ulong Value { get; init; }

    /// <summary>Size in bytes, 0 when unknown (<c>st_size</c>).</summary>
    public ulong Size { get; init; }

    /// <summary>Binding (high nibble of <c>st_info</c>).</summary>
    public ElfSymbolBinding Binding { get; init; }

    /// <summary>Type (low nibble of <c>st_info</c>).</summary>
    public ElfSymbolType Type { get; init; }

    /// <summary>Visibility (low bits of <c>st_other</c>).</summary>
    public ElfSymbolVisibility Visibility { get; init; }

    /// <summary>
    /// Index of the section the symbol is defined in, or <see cref="UndefinedSection"/>,
    /// <see cref="AbsoluteSection"/>, <see cref="CommonSection"/>; extended indexes are already resolved.
    /// </summary>
    public uint SectionIndex { get; init; }
}
