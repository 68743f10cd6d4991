using LivePatch.Elf;

namespace LivePatch.Payloads;

public sealed partial class Payload
{
    /// <summary>The hook records in section order, at most one of each kind.</summary>
    public IReadOnlyList<PayloadHook> Hooks { get; private init; } = [];

    /// <summary>The payload's hook of <paramref name="kind"/>, or null.</summary>
    public PayloadHook? HookOf(PayloadHookKind kind) => Hooks.FirstOrDefault(h => h.Kind == kind);

    // a = the hook, a function of the payload; b is unused (0).
    private static PayloadHook ReadHook(
        ElfFile elf, string file, Dictionary<ulong, ElfRelocation> relocations, int offset, string where, PayloadRecordKind kind)
    {
        var hookKind = (PayloadHookKind)(kind - PayloadRecordKind.PreApply);
        var what = $"the {PayloadHook.Describe(hookKind)} hook";
        var field = PointerField(file, relocations, offset + 8, where, $"a ({what})");
        var symbol = field.Symbol;
        if (symbol.SectionIndex == ElfSymbol.UndefinedSection)
        {
            throw new PayloadException(file, $"record at {where}: {what} '{field.SymbolName}' is not defined in the payload");
        }

        if (symbol.Type == ElfSymbolType.Section)
        {
            // A static function is usually referenced through its section symbol plus an offset.
            var section = symbol.SectionIndex;
            symbol = elf.Symbols.Where(s => s.SectionIndex == section && s.Type == ElfSymbolType.Function && (long)s.Value == field.Addend)
                .Select(s => (ElfSymbol?)s).FirstOrDefault()
                ?? throw new PayloadException(file, $"record at {where}: {what} at {field.SymbolName}+0x{field.Addend:x} is not a function symbol of the payload");
        }
        else if (symbol.Type != ElfSymbolType.Function || field.Addend != 0)
        {
            throw new PayloadException(file, $"record at {where}: {what} '{symbol.Name}'{(field.Addend != 0 ? $"+0x{field.Addend:x}" : "")} is not the start of a function");
        }

        if (!IsLoadedCode(elf, symbol))
        {
            throw new PayloadException(file, $"record at {where}: {what} '{symbol.Name}' does not lie in a loaded executable section of the payload");
        }

        return new PayloadHook(hookKind, symbol, offset);
    }

    private static void RefuseDuplicateHooks(List<PayloadHook> hooks, string file)
    {
        foreach (var group in hooks.GroupBy(h => h.Kind).Where(g => g.Count() > 1))
        {
            var (first, second) = (group.First(), group.Skip(1).First());
            throw new PayloadException(file,
                $"two {KindName(PayloadRecordKind.PreApply + (uint)group.Key)} hooks: '{first.Name}' ({RecordSection}+0x{first.RecordOffset:x}) and '{second.Name}' ({RecordSection}+0x{second.RecordOffset:x}); a payload has at most one of each kind");
        }
    }
}
