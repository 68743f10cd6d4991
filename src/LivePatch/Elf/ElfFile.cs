using System.Text;
using LivePatch.Elf.ElfInternal;

namespace LivePatch.Elf;

/// <summary>
/// A parsed ELF64 little-endian x86-64 file (relocatable, executable or shared object).
/// Everything is validated when the file is loaded, so no accessor can fail later on file contents.
/// </summary>
public sealed class ElfFile
{
    private readonly ReadOnlyMemory<byte> _bytes;
    private readonly Dictionary<int, ElfSymbol[]> _symbolTables;
    private Dictionary<string, ElfSymbol[]>? _symbolsByName;

    internal ElfFile(
        ReadOnlyMemory<byte> bytes, ElfType type, ElfMachine machine, ulong entry,
        ElfSection[] sections, ElfSegment[] segments, Dictionary<int, ElfSymbol[]> symbolTables,
        List<ElfRelocationSection> relocationSections, ElfNote[] notes)
    {
        _bytes = bytes;
        _symbolTables = symbolTables;
        Type = type;
        Machine = machine;
        Entry = entry;
        Sections = sections;
        Segments = segments;
        LoadSegments = Array.FindAll(segments, s => s.Type == ElfSegmentType.Load);
        Symbols = FirstTableOfType(ElfSectionType.SymbolTable);
        DynamicSymbols = FirstTableOfType(ElfSectionType.DynamicSymbolTable);
        RelocationSections = relocationSections;
        Notes = notes;
        var buildId = Array.Find(notes, n => n.Name == "GNU" && n.Type == ElfLayout.NtGnuBuildId);
        BuildId = buildId.Name == null ? null : Convert.ToHexStringLower(buildId.Descriptor.Span);
    }

    /// <summary>The kind of file (<c>e_type</c>).</summary>
    public ElfType Type { get; }

    /// <summary>The target architecture; always <see cref="ElfMachine.X64"/> for a loaded file.</summary>
    public ElfMachine Machine { get; }

    /// <summary>The entry point address (<c>e_entry</c>), 0 when there is none.</summary>
    public ulong Entry { get; }

    /// <summary>All section headers in table order, starting with the null section 0; empty when the file has none.</summary>
    public IReadOnlyList<ElfSection> Sections { get; }

    /// <summary>All program headers in table order; empty for most relocatable files.</summary>
    public IReadOnlyList<ElfSegment> Segments { get; }

    /// <summary>The <see cref="ElfSegmentType.Load"/> segments in table order.</summary>
    public IReadOnlyList<ElfSegment> LoadSegments { get; }

    /// <summary>The entries of the <c>.symtab</c> section (including null symbol 0), empty when the file is stripped.</summary>
    public IReadOnlyList<ElfSymbol> Symbols { get; }

    /// <summary>The entries of the <c>.dynsym</c> section (including null symbol 0), empty when there is none.</summary>
    public IReadOnlyList<ElfSymbol> DynamicSymbols { get; }

    /// <summary>Every RELA section with its decoded entries.</summary>
    public IReadOnlyList<ElfRelocationSection> RelocationSections { get; }

    /// <summary>Notes from the note sections, or from the PT_NOTE segments when the file has no section headers.</summary>
    public IReadOnlyList<ElfNote> Notes { get; }

    /// <summary>The GNU build-id as lowercase hex, or null when the file has no <c>NT_GNU_BUILD_ID</c> note.</summary>
    public string? BuildId { get; }

    /// <summary>Reads and parses the file at <paramref name="path"/>; I/O errors surface as the usual I/O exceptions.</summary>
    /// <exception cref="ElfFormatException">The file is not a well-formed ELF64 x86-64 file.</exception>
    public static ElfFile Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return Parse(File.ReadAllBytes(path));
    }

    /// <summary>Parses an ELF file held in memory; the file keeps a reference to the bytes, which must not change.</summary>
    /// <exception cref="ElfFormatException">The bytes are not a well-formed ELF64 x86-64 file.</exception>
    public static ElfFile Parse(ReadOnlyMemory<byte> bytes) => new ElfParser(bytes).Parse();

    /// <summary>Parses an ELF file held in an array; the file keeps a reference to the array, which must not change.</summary>
    /// <exception cref="ElfFormatException">The bytes are not a well-formed ELF64 x86-64 file.</exception>
    public static ElfFile Parse(byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return Parse(new ReadOnlyMemory<byte>(bytes));
    }

    /// <summary>Returns the file bytes of a section of this file; empty for <see cref="ElfSectionType.NoBits"/> and null sections.</summary>
    public ReadOnlyMemory<byte> GetSectionData(ElfSection section)
    {
        RequireOwnSection(section);
        return section.HasFileData ? _bytes.Slice((int)section.Offset, (int)section.Size) : ReadOnlyMemory<byte>.Empty;
    }

    /// <summary>Returns the file bytes of a segment of this file (<c>p_filesz</c> bytes from <c>p_offset</c>).</summary>
    public ReadOnlyMemory<byte> GetSegmentData(ElfSegment segment)
    {
        if (segment.Index < 0 || segment.Index >= Segments.Count || Segments[segment.Index] != segment)
        {
            throw new ArgumentException("The segment does not belong to this file.", nameof(segment));
        }

        return segment.Type == ElfSegmentType.Null || segment.FileSize == 0
            ? ReadOnlyMemory<byte>.Empty
            : _bytes.Slice((int)segment.Offset, (int)segment.FileSize);
    }

    /// <summary>
    /// The file bytes a loadable segment places at <paramref name="virtualAddress"/> (a link-time address): up to
    /// <paramref name="count"/> of them, fewer where the segment's file data ends; empty when no segment's file data
    /// holds the address. With <paramref name="executableOnly"/>, only executable segments count.
    /// </summary>
    public ReadOnlyMemory<byte> ReadLoaded(ulong virtualAddress, int count, bool executableOnly = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        foreach (var segment in LoadSegments)
        {
            if (virtualAddress < segment.VirtualAddress || virtualAddress - segment.VirtualAddress >= segment.FileSize)
                continue;
            if (executableOnly && !segment.Flags.HasFlag(ElfSegmentPermissions.Execute))
                continue;
            var offset = virtualAddress - segment.VirtualAddress;
            var available = (int)Math.Min((ulong)count, segment.FileSize - offset);
            return GetSegmentData(segment).Slice((int)offset, available);
        }
        return ReadOnlyMemory<byte>.Empty;
    }

    /// <summary>
    /// The shared object's name as its <c>DT_SONAME</c> gives it (<c>libz.so.1</c>): what <c>DT_NEEDED</c>, <c>ldd</c> and
    /// operators call it, while the file may be <c>libz.so.1.2.13</c>. Null for a file without one (executables).
    /// </summary>
    /// <exception cref="ElfFormatException">The dynamic section or its string table lies.</exception>
    public string? Soname => (_soname ??= ReadSoname() ?? "") is { Length: > 0 } name ? name : null;

    private string? _soname;

    private string? ReadSoname()
    {
        const long DtNull = 0, DtSoname = 14;
        var dynamic = Sections.FirstOrDefault(s => s.Type == ElfSectionType.Dynamic);
        if (dynamic is null || dynamic.Link >= Sections.Count)
            return null;
        var strings = Sections[(int)dynamic.Link];
        if (strings.Type != ElfSectionType.StringTable)
            return null;
        var data = GetSectionData(dynamic).Span;
        for (var offset = 0; offset + 16 <= data.Length; offset += 16)
        {
            var tag = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(data[offset..]);
            if (tag == DtNull)
                break;
            if (tag == DtSoname)
                return ReadString(strings, (uint)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data[(offset + 8)..]));
        }
        return null;
    }

    /// <summary>Returns the first section named <paramref name="name"/>, or null.</summary>
    public ElfSection? FindSection(string name)
    {
        foreach (var section in Sections)
        {
            if (section.Name == name)
            {
                return section;
            }
        }

        return null;
    }

    /// <summary>Returns every symbol named <paramref name="name"/>, first from <c>.symtab</c> then from <c>.dynsym</c>.</summary>
    public IReadOnlyList<ElfSymbol> FindSymbols(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var byName = LazyInitializer.EnsureInitialized(ref _symbolsByName, IndexSymbolsByName);
        return byName.TryGetValue(name, out var symbols) ? symbols : [];
    }

    /// <summary>Returns the entries of a symbol table section of this file (<c>SHT_SYMTAB</c> or <c>SHT_DYNSYM</c>).</summary>
    public IReadOnlyList<ElfSymbol> GetSymbols(ElfSection symbolTable)
    {
        RequireOwnSection(symbolTable);
        return _symbolTables.TryGetValue(symbolTable.Index, out var symbols)
            ? symbols
            : throw new ArgumentException($"{symbolTable} is not a symbol table.", nameof(symbolTable));
    }

    /// <summary>Reads the NUL-terminated string at <paramref name="index"/> of a string table section of this file.</summary>
    /// <exception cref="ElfFormatException">The index lies outside the table or the string has no terminating NUL.</exception>
    public string ReadString(ElfSection stringTable, uint index)
    {
        RequireOwnSection(stringTable);
        if (stringTable.Type != ElfSectionType.StringTable)
        {
            throw new ArgumentException($"{stringTable} is not a string table.", nameof(stringTable));
        }

        var data = GetSectionData(stringTable).Span;
        if (index >= (ulong)data.Length)
        {
            throw new ElfFormatException(
                $"{stringTable}: string index 0x{index:x} is past the end of the table (size 0x{data.Length:x})", (long)stringTable.Offset);
        }

        var nul = data[(int)index..].IndexOf((byte)0);
        if (nul < 0)
        {
            throw new ElfFormatException(
                $"{stringTable}: the string at index 0x{index:x} is not NUL-terminated", (long)stringTable.Offset + index);
        }

        return Encoding.UTF8.GetString(data.Slice((int)index, nul));
    }

    private void RequireOwnSection(ElfSection section)
    {
        ArgumentNullException.ThrowIfNull(section);
        if (section.Index >= Sections.Count || !ReferenceEquals(Sections[section.Index], section))
        {
            throw new ArgumentException($"{section} does not belong to this file.", nameof(section));
        }
    }

    private ElfSymbol[] FirstTableOfType(ElfSectionType type)
    {
        foreach (var section in Sections)
        {
            if (section.Type == type)
            {
                return _symbolTables[section.Index];
            }
        }

        return [];
    }

    private Dictionary<string, ElfSymbol[]> IndexSymbolsByName()
    {
        var byName = new Dictionary<string, List<ElfSymbol>>(StringComparer.Ordinal);
        foreach (var symbol in Symbols.Concat(DynamicSymbols))
        {
            if (symbol.Name.Length == 0)
            {
                continue;
            }

            if (!byName.TryGetValue(symbol.Name, out var list))
            {
                list = [];
                byName.Add(symbol.Name, list);
            }

            list.Add(symbol);
        }

        return byName.ToDictionary(p => p.Key, p => p.Value.ToArray(), StringComparer.Ordinal);
    }
}
