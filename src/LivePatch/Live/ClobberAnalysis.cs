using System.Buffers.Binary;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// Which call-clobbered registers a function may write, through every function it calls or tail-jumps to: decoded
/// from the code (Iced's instruction info). What is not known — a call through the PLT or a pointer, code without a
/// symbol, an IFUNC resolver, a chain too deep — counts as writing every call-clobbered register. The old functions'
/// code comes from their files (what the process's callers were compiled against); the new functions' from the
/// linked payload, its calls into the target followed there.
/// </summary>
internal sealed class ClobberAnalysis(TargetProcess target)
{
    private const int MaxDepth = 32;
    private const int MaxFunctionSize = 1 << 20;

    private readonly Dictionary<ulong, ClobberSet> _known = [];
    private readonly HashSet<ulong> _inProgress = [];
    private int _cyclesCut;

    /// <summary>The registers the target's function at <paramref name="entry"/> may write, as its file has it.</summary>
    public ClobberSet OfTargetFunction(ulong entry) => OfTarget(entry, 0);

    /// <summary>The registers the payload's function at <paramref name="entry"/> (linked in <paramref name="linked"/>) may write.</summary>
    public ClobberSet OfPayloadFunction(LinkedPayload linked, ulong entry) => OfPayload(linked, entry, 0);

    private ClobberSet OfTarget(ulong entry, int depth) => Remembered(entry, depth, () => ScanTarget(entry, depth));

    // Each function's set once per walk, and remembered when it is complete. Recursion: a function's own writes are
    // counted by its outermost visit; a set computed below a cut cycle may lack the writes of a function still in
    // progress, so it is kept only for this walk.
    private ClobberSet Remembered(ulong entry, int depth, Func<ClobberSet> scan)
    {
        if (_known.TryGetValue(entry, out var known))
            return known;
        if (depth > MaxDepth)
            return ClobberSet.Everything;
        if (!_inProgress.Add(entry))
        {
            _cyclesCut++;
            return ClobberSet.None;
        }
        var cutBefore = _cyclesCut;
        try
        {
            var set = scan();
            if (_cyclesCut == cutBefore || _inProgress.Count == 1)
                _known[entry] = set;
            return set;
        }
        finally
        {
            _inProgress.Remove(entry);
        }
    }

    private ClobberSet ScanTarget(ulong entry, int depth)
    {
        var module = target.Modules.FirstOrDefault(m => m.Regions.Any(r => r.Contains(entry)));
        if (module is null)
            return ClobberSet.Everything;
        // A stripped module's functions are sized by its debug file: unknown, an old function would count as writing
        // everything, and its callers' registers would go unprotected.
        var symbols = module.IsStripped ? module.Symbols.Concat(module.DebugSymbols) : module.Symbols;
        var symbol = symbols.Where(s => s.Address == entry && s.Size is > 0 and < MaxFunctionSize)
            .OrderBy(s => s.Type == ElfSymbolType.GnuIndirectFunction ? 1 : 0).FirstOrDefault();
        if (symbol is null || symbol.Type != ElfSymbolType.Function)
            return ClobberSet.Everything; // a PLT entry, an IFUNC resolver, or code nobody named
        var code = module.Elf.ReadLoaded(entry - module.LoadBias, (int)symbol.Size, executableOnly: true);
        if (code.Length != (int)symbol.Size)
            return ClobberSet.Everything;
        return Follow(FunctionCode.Scan(code.Span, entry), next => OfTarget(next, depth + 1));
    }

    private ClobberSet OfPayload(LinkedPayload linked, ulong entry, int depth) => Remembered(entry, depth, () => ScanPayload(linked, entry, depth));

    private ClobberSet ScanPayload(LinkedPayload linked, ulong entry, int depth)
    {
        if (!linked.Text.Contains(entry))
            return OfTarget(entry, depth + 1);
        var function = linked.Payload.Elf.Symbols.FirstOrDefault(s => s.Type == ElfSymbolType.Function && s.Size > 0
            && s.SectionIndex is not (ElfSymbol.UndefinedSection or ElfSymbol.AbsoluteSection) && linked.AddressOf(s) == entry);
        if (function.Name is null)
            return StubTarget(linked, entry) is { } through ? OfTarget(through, depth + 1) : ClobberSet.Everything;
        var offset = (int)(entry - linked.Text.Address);
        if (offset + (long)function.Size > linked.Text.Bytes.Length)
            return ClobberSet.Everything;
        return Follow(FunctionCode.Scan(linked.Text.Bytes.AsSpan(offset, (int)function.Size), entry), next => OfPayload(linked, next, depth + 1));
    }

    // A payload stub is `jmp *slot(%rip)`: where the call really goes is the slot's value.
    private static ulong? StubTarget(LinkedPayload linked, ulong stub)
    {
        var offset = (int)(stub - linked.Text.Address);
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(linked.Text.Bytes, offset, linked.Text.Bytes.Length - offset), stub);
        decoder.Decode(out var instruction);
        if (instruction.Mnemonic != Mnemonic.Jmp || !instruction.IsIPRelativeMemoryOperand)
            return null;
        var slot = instruction.IPRelativeMemoryAddress;
        foreach (var region in new[] { linked.ReadOnly, linked.Data, linked.Text })
            if (region.Contains(slot) && slot + 8 <= region.Address + (ulong)region.Bytes.Length)
                return BinaryPrimitives.ReadUInt64LittleEndian(region.Bytes.AsSpan((int)(slot - region.Address), 8));
        return null;
    }

    private static ClobberSet Follow(FunctionCode code, Func<ulong, ClobberSet> callee)
    {
        if (code.Opaque is not null)
            return ClobberSet.Everything;
        var set = code.Written;
        foreach (var next in code.Calls.Concat(code.Exits))
        {
            set = set.Union(callee(next));
            if (set == ClobberSet.Everything)
                break;
        }
        return set;
    }
}
