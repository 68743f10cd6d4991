using LivePatch.Elf;

namespace LivePatch.Payloads;

public sealed partial class Payload
{
    /// <summary>The ORIGINAL records in section order: symbols the payload calls to run the code it replaces.</summary>
    public IReadOnlyList<PayloadOriginal> Originals { get; private init; } = [];

    // a = the old function's name (as REPLACE names it), b = the payload's undefined symbol to resolve to its trampoline.
    private static PayloadOriginal ReadOriginal(
        ElfFile elf, string file, Dictionary<ulong, ElfRelocation> relocations, int offset, string where)
    {
        var (module, name) = SplitModule(ReadString(elf, file, PointerField(file, relocations, offset + 8, where, "a (old function name)"), where), file, where);
        var original = PointerField(file, relocations, offset + 16, where, "b (the original's symbol)");
        if (original.Symbol.SectionIndex != ElfSymbol.UndefinedSection || original.SymbolIndex == 0)
        {
            throw new PayloadException(file,
                $"record at {where}: the original of '{name}' must be a symbol the payload declares and does not define (LIVEPATCH_ORIGINAL declares it), but '{original.SymbolName}' is defined in the payload");
        }

        if (original.SymbolName.Length == 0)
        {
            throw new PayloadException(file, $"record at {where}: the original of '{name}' is a symbol without a name");
        }

        if (original.Addend != 0)
        {
            throw new PayloadException(file, $"record at {where}: the original of '{name}' points into '{original.SymbolName}'+0x{original.Addend:x}, not to its start");
        }

        return new PayloadOriginal(name, module, original.SymbolName, offset);
    }

    /// <summary>Ties each original to the REPLACE record of its function; refuses one that names no replaced function, or several, and a symbol declared twice.</summary>
    private static void BindOriginals(List<PayloadOriginal> originals, List<PayloadFunction> functions, string file)
    {
        for (var i = 0; i < originals.Count; i++)
        {
            var original = originals[i];
            var where = $"{RecordSection}+0x{original.RecordOffset:x}";
            // Matched as duplicate REPLACE records are: a bare name matches any module's function of that name.
            var matches = functions.Where(f => f.OldName == original.OldName
                && (original.OldModule == null || f.OldModule == null || f.OldModule == original.OldModule)).ToList();
            if (matches.Count == 0)
            {
                throw new PayloadException(file,
                    $"record at {where}: '{original.Symbol}' is declared the original of '{original.OldName}', which the payload does not replace (add LIVEPATCH_REPLACE(\"{original.OldName}\", ...))");
            }

            if (matches.Count > 1)
            {
                throw new PayloadException(file,
                    $"record at {where}: '{original.Symbol}' is declared the original of '{original.OldName}', which names several replaced functions: {string.Join(", ", matches.Select(f => $"'{f.OldModule}!{f.OldName}'"))}");
            }

            original.Function = matches[0];
            if (originals.Take(i).FirstOrDefault(o => o.Symbol == original.Symbol) is { } earlier)
            {
                throw new PayloadException(file,
                    $"'{original.Symbol}' is declared an original twice: of '{earlier.OldName}' ({RecordSection}+0x{earlier.RecordOffset:x}) and of '{original.OldName}' ({where})");
            }
        }
    }
}
