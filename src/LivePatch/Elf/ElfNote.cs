namespace LivePatch.Elf;

/// <summary>One note from a note section or segment, such as the GNU build-id.</summary>
public readonly record struct ElfNote
{
    /// <summary>Owner name without its terminating NUL, such as <c>GNU</c>.</summary>
    public string Name { get; init; }

    /// <summary>Owner-defined type (<c>n_type</c>); 3 is <c>NT_GNU_BUILD_ID</c> for owner <c>GNU</c>.</summary>
    public uint Type { get; init; }

    /// <summary>The descriptor bytes, a view of the file.</summary>
    public ReadOnlyMemory<byte> Descriptor { get; init; }
}
