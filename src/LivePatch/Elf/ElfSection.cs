namespace LivePatch.Elf;

/// <summary>One section header of an ELF file, with its name resolved through the section-name string table.</summary>
public sealed class ElfSection
{
    internal ElfSection(int index, string name, long headerOffset, in ElfInternal.SectionHeader header)
    {
        Index = index;
        Name = name;
        HeaderOffset = headerOffset;
        Type = (ElfSectionType)header.Type;
        Flags = (ElfSectionAttributes)header.Flags;
        Address = header.Address;
        Offset = header.Offset;
        Size = header.Size;
        Link = header.Link;
        Info = header.Info;
        Alignment = header.Alignment;
        EntrySize = header.EntrySize;
    }

    /// <summary>Position of this header in the section header table.</summary>
    public int Index { get; }

    /// <summary>Section name, such as <c>.text</c>; empty when the file has no section-name table.</summary>
    public string Name { get; }

    /// <summary>Section type (<c>sh_type</c>).</summary>
    public ElfSectionType Type { get; }

    /// <summary>Attribute flags (<c>sh_flags</c>).</summary>
    public ElfSectionAttributes Flags { get; }

    /// <summary>Virtual address at run time, or 0 when the section is not loaded (<c>sh_addr</c>).</summary>
    public ulong Address { get; }

    /// <summary>File offset of the contents (<c>sh_offset</c>); meaningless for <see cref="ElfSectionType.NoBits"/>.</summary>
    public ulong Offset { get; }

    /// <summary>Size in bytes (<c>sh_size</c>); in memory only for <see cref="ElfSectionType.NoBits"/>.</summary>
    public ulong Size { get; }

    /// <summary>Index of a related section, whose meaning depends on <see cref="Type"/> (<c>sh_link</c>).</summary>
    public uint Link { get; }

    /// <summary>Extra information whose meaning depends on <see cref="Type"/> (<c>sh_info</c>).</summary>
    public uint Info { get; }

    /// <summary>Required alignment of the address, 0 or a power of two (<c>sh_addralign</c>).</summary>
    public ulong Alignment { get; }

    /// <summary>Size of one entry for sections holding a table, else 0 (<c>sh_entsize</c>).</summary>
    public ulong EntrySize { get; }

    internal long HeaderOffset { get; }

    internal bool HasFileData => Type != ElfSectionType.NoBits && Type != ElfSectionType.Null;

    /// <summary>Returns <c>section N (name)</c>, the form used in error messages.</summary>
    public override string ToString() => Name.Length == 0 ? $"section {Index}" : $"section {Index} ({Name})";
}
