using System.Buffers.Binary;
using LivePatch.Elf;

namespace LivePatch.Targets;

/// <summary>
/// An executable or shared library mapped into a target: its mappings, load bias and ELF file.
/// The ELF is read through <c>/proc/PID/map_files/</c>, so a binary replaced or deleted on disk
/// after it was mapped still resolves to the code that actually runs.
/// </summary>
public sealed class TargetModule
{
    private const ulong PageMask = ~0xfffUL;

    private readonly int _pid;
    private readonly IReadOnlyList<string> _debugDirectories;
    private readonly Lazy<ElfFile> _elf;
    private readonly Lazy<ulong> _loadBias;
    private readonly Lazy<IReadOnlyList<TargetSymbol>> _symbols;
    private CallFrameInfo? _callFrames;

    internal TargetModule(int pid, string path, IReadOnlyList<MemoryRegion> regions, bool isMainExecutable, IReadOnlyList<string> debugDirectories)
    {
        _pid = pid;
        _debugDirectories = debugDirectories;
        Path = path;
        Regions = regions;
        IsMainExecutable = isMainExecutable;
        _elf = new Lazy<ElfFile>(ReadElf);
        _loadBias = new Lazy<ulong>(ComputeLoadBias);
        _symbols = new Lazy<IReadOnlyList<TargetSymbol>>(ReadSymbols);
    }

    /// <summary>The mapped file's path as the kernel shows it (it may end in <c>(deleted)</c>).</summary>
    public string Path { get; }

    /// <summary>The file name without directories or a <c>(deleted)</c> mark, e.g. <c>libc.so.6</c>.</summary>
    public string Name => System.IO.Path.GetFileName(Path.EndsWith(" (deleted)", StringComparison.Ordinal) ? Path[..^10] : Path);

    /// <summary>True for the process's main program, false for shared libraries.</summary>
    public bool IsMainExecutable { get; }

    /// <summary>The module's mappings, in address order.</summary>
    public IReadOnlyList<MemoryRegion> Regions { get; }

    /// <summary>The lowest mapped address of the module.</summary>
    public ulong Start => Regions[0].Start;

    /// <summary>One past the highest mapped address of the module.</summary>
    public ulong End => Regions[^1].End;

    /// <summary>What to add to an address in the ELF file to get the address in the process.</summary>
    /// <exception cref="TargetException">The mapped file cannot be read.</exception>
    public ulong LoadBias => _loadBias.Value;

    /// <summary>The module's ELF file, as mapped (read through map_files).</summary>
    /// <exception cref="TargetException">The mapped file cannot be read or is not a valid ELF file.</exception>
    public ElfFile Elf => _elf.Value;

    /// <summary>The GNU build-id of the mapped file, or null when it has none.</summary>
    public string? BuildId => Elf.BuildId;

    /// <summary>Every defined function and data symbol of the module's own tables (<c>.symtab</c>, static ones too, and <c>.dynsym</c>), at its address in the process.</summary>
    public IReadOnlyList<TargetSymbol> Symbols => _symbols.Value;

    /// <summary>
    /// For a stripped module, the symbols stripping removed, read when first asked for: from its separate debug file,
    /// or else from its MiniDebugInfo (<c>.gnu_debugdata</c>); empty when it is not stripped or neither was found
    /// (<see cref="DebugFilesLooked"/> says where debug files were looked for).
    /// </summary>
    public IReadOnlyList<TargetSymbol> DebugSymbols => _debugSymbols ??= ReadDebugSymbols();

    private IReadOnlyList<TargetSymbol>? _debugSymbols;

    private List<TargetSymbol> ReadDebugSymbols()
    {
        var symbols = new List<TargetSymbol>();
        if (!IsStripped)
            return symbols;
        var looked = new List<string>();
        if ((DebugFiles.Find(Elf, Path, _debugDirectories, looked) ?? MiniDebugInfo.Read(Elf, Name, looked)) is { } debug)
        {
            DebugFile = debug.Path;
            var seen = Symbols.Select(s => (s.Name, s.Address)).ToHashSet();
            foreach (var symbol in debug.File.Symbols)
            {
                if (symbol.Name.Length == 0 || symbol.SectionIndex is ElfSymbol.UndefinedSection or ElfSymbol.CommonSection or ElfSymbol.AbsoluteSection)
                    continue;
                if (symbol.Type is not (ElfSymbolType.Function or ElfSymbolType.DataObject or ElfSymbolType.GnuIndirectFunction or ElfSymbolType.NoType))
                    continue;
                var address = symbol.Value + LoadBias;
                if (seen.Add((symbol.Name, address)))
                    symbols.Add(new TargetSymbol(this, symbol.Name, address, symbol.Size, symbol.Type, symbol.Binding, false, false) { FromDebugFile = true });
            }
        }
        DebugFilesLooked = looked;
        return symbols;
    }

    /// <summary>
    /// The module's <c>.eh_frame</c> call-frame information, parsed and indexed when first asked for (before a stop) and
    /// kept: what the stack unwinder reads inside the stop.
    /// </summary>
    /// <exception cref="TargetException">The mapped file cannot be read.</exception>
    /// <exception cref="ElfFormatException">Its <c>.eh_frame</c> or <c>.eh_frame_hdr</c> lies.</exception>
    internal CallFrameInfo CallFrames => _callFrames ??= CallFrameInfo.Read(Elf);

    /// <summary>True when the module's file has no <c>.symtab</c>: only exported names are in it.</summary>
    public bool IsStripped => Elf.FindSection(".symtab") is null;

    /// <summary>
    /// Where <see cref="DebugSymbols"/> came from: the separate debug file's path, or <c>NAME.gnu_debugdata</c> for the
    /// module's own MiniDebugInfo; null when neither was found (read them first).
    /// </summary>
    public string? DebugFile { get; private set; }

    /// <summary>True when <see cref="DebugSymbols"/> came from the module's MiniDebugInfo, not a separate debug file.</summary>
    public bool UsesMiniDebugInfo => DebugFile is { } source && !System.IO.Path.IsPathRooted(source);

    /// <summary>For a stripped module: where a debug file was looked for and not found or not taken (and why).</summary>
    public IReadOnlyList<string> DebugFilesLooked { get; private set; } = [];

    /// <summary>
    /// True when <paramref name="spec"/> names this module: its file name (<c>libz.so.1.2.13</c>), its path, its soname
    /// (<c>libz.so.1</c>, what DT_NEEDED and <c>ldd</c> say), or either without its <c>.so</c> suffix and version
    /// (<c>libz</c>).
    /// </summary>
    public bool Matches(string spec)
    {
        if (string.Equals(spec, Name, StringComparison.Ordinal) || string.Equals(spec, Path, StringComparison.Ordinal))
            return true;
        string? soname;
        try
        {
            soname = IsMainExecutable ? null : Elf.Soname;
        }
        catch (Exception error) when (error is TargetException or ElfFormatException)
        {
            soname = null;
        }
        if (soname is not null && string.Equals(spec, soname, StringComparison.Ordinal))
            return true;
        return string.Equals(spec, WithoutSuffix(Name), StringComparison.Ordinal)
            || (soname is not null && string.Equals(spec, WithoutSuffix(soname), StringComparison.Ordinal));
    }

    // libz.so.1.2.13 -> libz; a name without ".so" stays as it is (an executable's name has no version to drop).
    private static string WithoutSuffix(string name) =>
        name.Contains(".so", StringComparison.Ordinal) ? name[..name.IndexOf(".so", StringComparison.Ordinal)] : name;

    /// <inheritdoc />
    public override string ToString() => $"{Name} at 0x{Start:x}";

    private ElfFile ReadElf()
    {
        var first = Regions[0];
        var mapFile = $"/proc/{_pid}/map_files/{first.Start:x}-{first.End:x}";
        try
        {
            return ElfFile.Load(mapFile);
        }
        catch (ElfFormatException error)
        {
            throw new TargetException(TargetError.SystemCallFailed, _pid, $"process {_pid}: module {Path} is not a valid ELF file: {error.Message}", error);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            if (!Directory.Exists($"/proc/{_pid}"))
                throw new TargetException(TargetError.Exited, _pid, $"process {_pid} exited while reading {Path}", error);
            // map_files needs CAP_SYS_ADMIN: the owner of a process reads the file through the process's root instead.
            return ReadThroughRoot(first, mapFile, error);
        }
    }

    /// <summary>
    /// The mapped file through <c>/proc/PID/root/PATH</c> (the path as the process sees it, in its own mount
    /// namespace), accepted only when the file read has the device and inode of the mapping: a file replaced on disk
    /// since it was mapped is refused, never read in its place.
    /// </summary>
    private ElfFile ReadThroughRoot(MemoryRegion mapping, string mapFile, Exception mapFilesError)
    {
        var rooted = $"/proc/{_pid}/root{Path}";
        string why;
        try
        {
            if (Path.EndsWith(" (deleted)", StringComparison.Ordinal))
                why = "the file was deleted since it was mapped";
            else
            {
                var bytes = RegularFile.ReadAll(rooted, int.MaxValue, out var device, out var inode);
                if (inode == mapping.Inode && (mapping.Device.Length == 0 || string.Equals(device, mapping.Device, StringComparison.OrdinalIgnoreCase)))
                    return ElfFile.Parse(bytes);
                why = $"it is not the file mapped (device {device} inode {inode}, the mapping's {mapping.Device} {mapping.Inode}): replaced since";
            }
        }
        catch (ElfFormatException error)
        {
            throw new TargetException(TargetError.SystemCallFailed, _pid, $"process {_pid}: module {Path} is not a valid ELF file: {error.Message}", error);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            why = error.Message;
        }
        throw new TargetException(TargetError.PermissionDenied, _pid,
            $"process {_pid}: cannot read module {Path}: {mapFile}: {mapFilesError.Message} (it needs CAP_SYS_ADMIN), and {rooted}: {why}", mapFilesError);
    }

    // The mapping of the lowest file offset came from a PT_LOAD segment: bias = where it is - where the file says.
    private ulong ComputeLoadBias()
    {
        var first = Regions.MinBy(r => r.FileOffset);
        foreach (var segment in Elf.LoadSegments)
        {
            var segmentPageOffset = segment.Offset & PageMask;
            if (first.FileOffset >= segmentPageOffset && first.FileOffset < segment.Offset + Math.Max(segment.FileSize, 1))
                return first.Start - ((segment.VirtualAddress & PageMask) + (first.FileOffset - segmentPageOffset));
        }
        throw new TargetException(TargetError.SystemCallFailed, _pid,
            $"process {_pid}: module {Path}: no PT_LOAD segment maps file offset 0x{first.FileOffset:x}");
    }

    private List<TargetSymbol> ReadSymbols()
    {
        var elf = Elf;
        var bias = LoadBias;
        var symbols = new List<TargetSymbol>();
        var seen = new HashSet<(string, ulong)>();
        foreach (var symbol in elf.Symbols)
            Add(symbol, fromDynamic: false, hidden: false);

        var versions = elf.Sections.FirstOrDefault(s => s.Type == ElfSectionType.GnuVersionSymbols);
        var versionData = versions is null ? default : elf.GetSectionData(versions).Span;
        foreach (var symbol in elf.DynamicSymbols)
        {
            // Bit 15 of the symbol's .gnu.version entry marks a non-default version (name@VER, not name@@VER).
            var hidden = versionData.Length >= (symbol.Index + 1) * 2
                && (BinaryPrimitives.ReadUInt16LittleEndian(versionData[(symbol.Index * 2)..]) & 0x8000) != 0;
            Add(symbol, fromDynamic: true, hidden);
        }
        return symbols;

        void Add(ElfSymbol symbol, bool fromDynamic, bool hidden)
        {
            if (symbol.Name.Length == 0 || symbol.SectionIndex == ElfSymbol.UndefinedSection || symbol.SectionIndex == ElfSymbol.CommonSection)
                return;
            if (symbol.Type is not (ElfSymbolType.Function or ElfSymbolType.DataObject or ElfSymbolType.GnuIndirectFunction or ElfSymbolType.NoType))
                return;
            var address = symbol.SectionIndex == ElfSymbol.AbsoluteSection ? symbol.Value : symbol.Value + bias;
            if (!seen.Add((symbol.Name, address)))
                return;
            symbols.Add(new TargetSymbol(this, symbol.Name, address, symbol.Size, symbol.Type, symbol.Binding, fromDynamic, hidden));
        }
    }
}

/// <summary>A symbol defined by a module of a target, at its address in the process.</summary>
/// <param name="Module">The module that defines it.</param>
/// <param name="Name">The symbol's name, without version.</param>
/// <param name="Address">Its address in the process (load bias applied).</param>
/// <param name="Size">Its size in bytes as the ELF file records it (0 when unknown).</param>
/// <param name="Type">Function, data object, indirect function or untyped.</param>
/// <param name="Binding">Local (static), global or weak.</param>
/// <param name="IsDynamic">True when it came from <c>.dynsym</c>, false from <c>.symtab</c>.</param>
/// <param name="IsNonDefaultVersion">True for an old version kept for compatibility (<c>name@VER</c>).</param>
public sealed record TargetSymbol(TargetModule Module, string Name, ulong Address, ulong Size, ElfSymbolType Type, ElfSymbolBinding Binding, bool IsDynamic, bool IsNonDefaultVersion)
{
    /// <summary>True for a function (including GNU indirect functions).</summary>
    public bool IsFunction => Type is ElfSymbolType.Function or ElfSymbolType.GnuIndirectFunction;

    /// <summary>True when it came from the module's separate debug file or MiniDebugInfo (the module is stripped), not its own tables.</summary>
    public bool FromDebugFile { get; init; }

    /// <summary>How it is named: <c>module!name</c>, or <c>module+0xOFFSET</c> for a function without a name.</summary>
    public string QualifiedName => Name.StartsWith("+0x", StringComparison.Ordinal) ? $"{Module.Name}{Name}" : $"{Module.Name}!{Name}";

    /// <summary>How the symbol is written in messages: <c>module!name at 0x...</c>.</summary>
    public override string ToString() => $"{QualifiedName} at 0x{Address:x}{(Binding == ElfSymbolBinding.Local ? " (static)" : "")}";
}
