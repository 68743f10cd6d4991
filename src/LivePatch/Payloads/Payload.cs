using System.Buffers.Binary;
using System.Text;
using LivePatch.Elf;

namespace LivePatch.Payloads;

/// <summary>
/// A payload: an x86-64 ELF relocatable object compiled from C with <c>livepatch.h</c>, whose
/// <c>.livepatch.funcs</c> records name the target functions it replaces. Loading validates everything.
/// </summary>
public sealed partial class Payload
{
    /// <summary>The section the <c>LIVEPATCH_*</c> macros write their records into.</summary>
    public const string RecordSection = ".livepatch.funcs";

    /// <summary>The largest payload object read: a bigger file is refused before it is read.</summary>
    public const long MaxFileBytes = 256L << 20;

    /// <summary>Size of one record (<c>struct livepatch_record</c>), in bytes.</summary>
    public const int RecordSize = 24;

    private Payload(string file, ElfFile elf, PayloadFunction[] functions)
    {
        File = file;
        Name = Path.GetFileNameWithoutExtension(file);
        Elf = elf;
        Functions = functions;
    }

    /// <summary>The payload's name: its file name without directory and extension.</summary>
    public string Name { get; }

    /// <summary>The file (path or name) the payload was loaded from, as messages name it.</summary>
    public string File { get; }

    /// <summary>The parsed object file.</summary>
    public ElfFile Elf { get; }

    /// <summary>The REPLACE records in section order.</summary>
    public IReadOnlyList<PayloadFunction> Functions { get; }

    /// <summary>The payloads that must be applied before this one (<c>LIVEPATCH_DEPENDS</c>), in section order.</summary>
    public IReadOnlyList<string> Depends { get; private init; } = [];

    /// <summary>The exact binaries this payload was built against (<c>LIVEPATCH_TARGET_BUILD_ID</c>).</summary>
    public IReadOnlyList<PayloadBuildId> TargetBuildIds { get; private init; } = [];

    /// <summary>Reads and validates the payload object at <paramref name="path"/>.</summary>
    /// <exception cref="PayloadException">The file cannot be read, is not a well-formed payload, or its records are wrong.</exception>
    public static Payload Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try
        {
            bytes = RegularFile.ReadAll(path, MaxFileBytes);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            throw new PayloadException(path, $"cannot read the file: {error.Message}", error);
        }

        return Parse(bytes, path);
    }

    /// <summary>Parses and validates a payload object held in memory; <paramref name="name"/> is its file name, used for <see cref="Name"/> and in messages.</summary>
    /// <exception cref="PayloadException">The bytes are not a well-formed payload or its records are wrong.</exception>
    public static Payload Parse(byte[] bytes, string name)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        ArgumentNullException.ThrowIfNull(name);
        ElfFile elf;
        try
        {
            elf = ElfFile.Parse(bytes);
        }
        catch (ElfFormatException error)
        {
            throw new PayloadException(name, $"malformed ELF: {error.Message}", error);
        }

        if (elf.Type != ElfType.Relocatable)
        {
            throw new PayloadException(name, $"not a relocatable object (ELF type {elf.Type}): build it with gcc -c");
        }

        PayloadValidator.Validate(elf, name);
        var records = ReadRecords(elf, name);
        return new Payload(name, elf, [.. records.Functions])
        {
            Depends = records.Depends, TargetBuildIds = records.BuildIds, Originals = records.Originals, Hooks = records.Hooks,
        };
    }

    /// <summary>Returns <see cref="Name"/>.</summary>
    public override string ToString() => Name;

    /// <summary>Everything the records say, by kind.</summary>
    private sealed class Records
    {
        public List<PayloadFunction> Functions { get; } = [];
        public List<string> Depends { get; } = [];
        public List<PayloadBuildId> BuildIds { get; } = [];
        public List<PayloadOriginal> Originals { get; } = [];
        public List<PayloadHook> Hooks { get; } = [];
    }

    private static Records ReadRecords(ElfFile elf, string file)
    {
        var section = elf.FindSection(RecordSection)
            ?? throw new PayloadException(file, $"no {RecordSection} section: the payload replaces nothing (use LIVEPATCH_REPLACE)");
        if (section.Type != ElfSectionType.ProgBits)
        {
            throw new PayloadException(file, $"{RecordSection} is of type {section.Type}, not PROGBITS");
        }

        var data = elf.GetSectionData(section).Span;
        var relocations = RelocationsByOffset(elf, section, file);
        var records = new Records();
        var functions = records.Functions;
        for (var offset = 0; offset < data.Length; offset += RecordSize)
        {
            var where = $"{RecordSection}+0x{offset:x}";
            if (data.Length - offset < RecordSize)
            {
                throw new PayloadException(file, $"truncated record at {where}: {data.Length - offset} bytes left, a record has {RecordSize}");
            }

            var kind = BinaryPrimitives.ReadUInt32LittleEndian(data[offset..]);
            var size = BinaryPrimitives.ReadUInt32LittleEndian(data[(offset + 4)..]);
            if (size != RecordSize)
            {
                throw new PayloadException(file, $"record at {where} has size {size}, expected {RecordSize} (payload built with another livepatch.h?)");
            }

            switch ((PayloadRecordKind)kind)
            {
                case PayloadRecordKind.Replace:
                    functions.Add(ReadReplace(elf, file, relocations, offset, where));
                    break;
                case PayloadRecordKind.Depends:
                    records.Depends.Add(ReadName(elf, file, relocations, offset + 8, where, "a (the payload depended on)"));
                    break;
                case PayloadRecordKind.TargetBuildId:
                    records.BuildIds.Add(ReadBuildId(elf, file, relocations, offset, where));
                    break;
                case PayloadRecordKind.Original:
                    records.Originals.Add(ReadOriginal(elf, file, relocations, offset, where));
                    break;
                case >= PayloadRecordKind.PreApply and <= PayloadRecordKind.PostRevert:
                    records.Hooks.Add(ReadHook(elf, file, relocations, offset, where, (PayloadRecordKind)kind));
                    break;
                default:
                    throw new PayloadException(file, $"record at {where} has unknown kind {kind}");
            }
        }

        if (functions.Count == 0)
        {
            throw new PayloadException(file, $"{RecordSection} holds no REPLACE record: the payload replaces nothing");
        }

        RefuseDuplicates(functions, file);
        BindOriginals(records.Originals, functions, file);
        RefuseDuplicateHooks(records.Hooks, file);
        return records;
    }

    private static string ReadName(ElfFile elf, string file, Dictionary<ulong, ElfRelocation> relocations, int fieldOffset, string where, string field)
    {
        var text = ReadString(elf, file, PointerField(file, relocations, fieldOffset, where, field), where);
        return text.Length > 0 ? text : throw new PayloadException(file, $"record at {where}: field {field} is an empty string");
    }

    private static PayloadBuildId ReadBuildId(ElfFile elf, string file, Dictionary<ulong, ElfRelocation> relocations, int offset, string where)
    {
        var module = ReadName(elf, file, relocations, offset + 8, where, "a (the module)");
        var hex = ReadName(elf, file, relocations, offset + 16, where, "b (the build-id)").ToLowerInvariant();
        if (hex.Length % 2 != 0 || hex.Length < 2 || !hex.All(char.IsAsciiHexDigit))
            throw new PayloadException(file, $"record at {where}: build-id '{hex}' of {module} is not an even number of hex digits");
        return new PayloadBuildId(module, hex);
    }

    private static Dictionary<ulong, ElfRelocation> RelocationsByOffset(ElfFile elf, ElfSection section, string file)
    {
        var byOffset = new Dictionary<ulong, ElfRelocation>();
        foreach (var relocationSection in elf.RelocationSections)
        {
            if (relocationSection.TargetSection?.Index != section.Index)
            {
                continue;
            }

            foreach (var relocation in relocationSection.Relocations)
            {
                // Each relocation fills a pointer field, a or b, of a whole record.
                if (relocation.Offset / RecordSize >= section.Size / RecordSize || relocation.Offset % RecordSize is not (8 or 16))
                {
                    throw new PayloadException(file,
                        $"relocation {relocation.TypeName} at {RecordSection}+0x{relocation.Offset:x} (r_offset) is not at a pointer field (a or b) of a record");
                }

                if (!byOffset.TryAdd(relocation.Offset, relocation))
                {
                    throw new PayloadException(file, $"two relocations at {RecordSection}+0x{relocation.Offset:x}");
                }
            }
        }

        return byOffset;
    }

    private static PayloadFunction ReadReplace(
        ElfFile elf, string file, Dictionary<ulong, ElfRelocation> relocations, int offset, string where)
    {
        var oldField = PointerField(file, relocations, offset + 8, where, "a (old function name)");
        var newField = PointerField(file, relocations, offset + 16, where, "b (new function)");
        var qualifiedName = ReadString(elf, file, oldField, where);
        var (module, name) = SplitModule(qualifiedName, file, where);
        var symbol = FindNewFunction(elf, file, newField, where);
        return new PayloadFunction(name, module, symbol, offset);
    }

    private static ElfRelocation PointerField(
        string file, Dictionary<ulong, ElfRelocation> relocations, int fieldOffset, string where, string field)
    {
        if (!relocations.TryGetValue((ulong)fieldOffset, out var relocation))
        {
            throw new PayloadException(file, $"record at {where}: field {field} is a null pointer (no relocation at {RecordSection}+0x{fieldOffset:x})");
        }

        if (relocation.Type != ElfRelocationType.Direct64)
        {
            throw new PayloadException(file, $"record at {where}: field {field} has relocation {relocation.TypeName}, expected R_X86_64_64");
        }

        return relocation;
    }

    private static string ReadString(ElfFile elf, string file, ElfRelocation relocation, string where)
    {
        var symbol = relocation.Symbol;
        if (symbol.SectionIndex == ElfSymbol.UndefinedSection || symbol.SectionIndex >= elf.Sections.Count)
        {
            throw new PayloadException(file, $"record at {where}: the old name points to '{relocation.SymbolName}', not to a string literal of the payload");
        }

        var section = elf.Sections[(int)symbol.SectionIndex];
        var data = elf.GetSectionData(section).Span;
        var start = (long)symbol.Value + relocation.Addend;
        if (start < 0 || start >= data.Length)
        {
            throw new PayloadException(file, $"record at {where}: the old name at {section.Name}+0x{start:x} lies outside its section");
        }

        var length = data[(int)start..].IndexOf((byte)0);
        if (length < 0)
        {
            throw new PayloadException(file, $"record at {where}: the old name at {section.Name}+0x{start:x} is not NUL-terminated");
        }

        var text = Encoding.UTF8.GetString(data.Slice((int)start, length));
        PayloadValidator.RequirePrintable(file, text, $"record at {where}: the string at {section.Name}+0x{start:x}");
        return text;
    }

    private static (string? Module, string Name) SplitModule(string qualifiedName, string file, string where)
    {
        var bang = qualifiedName.IndexOf('!', StringComparison.Ordinal);
        var module = bang < 0 ? null : qualifiedName[..bang];
        var name = bang < 0 ? qualifiedName : qualifiedName[(bang + 1)..];
        if (module is { Length: 0 })
        {
            throw new PayloadException(file, $"record at {where}: empty module name in '{qualifiedName}'");
        }

        if (name.Length == 0)
        {
            throw new PayloadException(file, $"record at {where}: empty old function name in '{qualifiedName}'");
        }

        return (module, name);
    }

    private static ElfSymbol FindNewFunction(ElfFile elf, string file, ElfRelocation relocation, string where)
    {
        var symbol = relocation.Symbol;
        if (symbol.SectionIndex == ElfSymbol.UndefinedSection)
        {
            throw new PayloadException(file, $"record at {where}: the new function '{relocation.SymbolName}' is not defined in the payload");
        }

        if (symbol.Type == ElfSymbolType.Section)
        {
            // Static functions are usually referenced through their section symbol plus an offset.
            foreach (var candidate in elf.Symbols)
            {
                if (candidate.SectionIndex == symbol.SectionIndex && candidate.Type == ElfSymbolType.Function
                    && (long)candidate.Value == relocation.Addend)
                {
                    return RequireExecutable(elf, file, candidate, where);
                }
            }

            throw new PayloadException(file, $"record at {where}: the new function at {relocation.SymbolName}+0x{relocation.Addend:x} is not a function symbol of the payload");
        }

        if (symbol.Type != ElfSymbolType.Function)
        {
            throw new PayloadException(file, $"record at {where}: the new function '{symbol.Name}' is of type {symbol.Type}, not a function");
        }

        if (relocation.Addend != 0)
        {
            throw new PayloadException(file, $"record at {where}: the new function points into '{symbol.Name}'+0x{relocation.Addend:x}, not to its start");
        }

        return RequireExecutable(elf, file, symbol, where);
    }

    private static ElfSymbol RequireExecutable(ElfFile elf, string file, ElfSymbol symbol, string where) =>
        IsLoadedCode(elf, symbol) ? symbol
            : throw new PayloadException(file, $"record at {where}: the new function '{symbol.Name}' does not lie in a loaded executable section of the payload");

    /// <summary>True when <paramref name="symbol"/> lies in a section the layout places in the text region (SHF_ALLOC and SHF_EXECINSTR).</summary>
    private static bool IsLoadedCode(ElfFile elf, ElfSymbol symbol) =>
        symbol.SectionIndex < elf.Sections.Count && elf.Sections[(int)symbol.SectionIndex] is var section
        && PayloadLayout.IsLoaded(section) && section.Flags.HasFlag(ElfSectionAttributes.ExecInstr) && symbol.Value < section.Size;

    private static void RefuseDuplicates(List<PayloadFunction> functions, string file)
    {
        for (var i = 0; i < functions.Count; i++)
        {
            for (var j = 0; j < i; j++)
            {
                var (earlier, later) = (functions[j], functions[i]);
                // A bare name may be the same function as a module-qualified one, so both count as the same.
                if (earlier.OldName == later.OldName
                    && (earlier.OldModule == null || later.OldModule == null || earlier.OldModule == later.OldModule))
                {
                    throw new PayloadException(file,
                        $"'{later.OldName}' is replaced twice: by '{earlier.NewSymbol}' ({RecordSection}+0x{earlier.RecordOffset:x}) and by '{later.NewSymbol}' ({RecordSection}+0x{later.RecordOffset:x})");
                }
            }
        }
    }

    private static string KindName(PayloadRecordKind kind) => kind switch
    {
        PayloadRecordKind.Original => "ORIGINAL",
        PayloadRecordKind.Depends => "DEPENDS",
        PayloadRecordKind.TargetBuildId => "TARGET_BUILD_ID",
        PayloadRecordKind.PreApply => "PRE_APPLY",
        PayloadRecordKind.PostApply => "POST_APPLY",
        PayloadRecordKind.PreRevert => "PRE_REVERT",
        PayloadRecordKind.PostRevert => "POST_REVERT",
        _ => "REPLACE",
    };
}

/// <summary>A build-id a payload requires of a module of the target (<c>LIVEPATCH_TARGET_BUILD_ID</c>).</summary>
/// <param name="Module">The module's file name, as in <c>module!name</c> (e.g. <c>app</c>, <c>libc.so.6</c>).</param>
/// <param name="BuildId">The expected GNU build-id, lowercase hex.</param>
public sealed record PayloadBuildId(string Module, string BuildId);
