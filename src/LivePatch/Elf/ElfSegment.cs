namespace LivePatch.Elf;

/// <summary>One program header (segment) of an ELF file.</summary>
public readonly record struct ElfSegment
{
    /// <summary>Position of this header in the program header table.</summary>
    public int Index { get; init; }

    /// <summary>Segment type (<c>p_type</c>).</summary>
    public ElfSegmentType Type { get; init; }

    /// <summary>Permissions (<c>p_flags</c>).</summary>
    public ElfSegmentPermissions Flags { get; init; }

    /// <summary>File offset of the first byte (<c>p_offset</c>).</summary>
    public ulong Offset { get; init; }

    /// <summary>Virtual address of the first byte in memory (<c>p_vaddr</c>).</summary>
    public ulong VirtualAddress { get; init; }

    /// <summary>Physical address, usually equal to the virtual one (<c>p_paddr</c>).</summary>
    public ulong PhysicalAddress { get; init; }

    /// <summary>Number of bytes in the file (<c>p_filesz</c>).</summary>
    public ulong FileSize { get; init; }

    /// <summary>Number of bytes in memory, at least <see cref="FileSize"/> for loadable segments (<c>p_memsz</c>).</summary>
    public ulong MemorySize { get; init; }

    /// <summary>Alignment, 0 or a power of two (<c>p_align</c>).</summary>
    public ulong Alignment { get; init; }
}
