using System.Buffers.Binary;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>Which way a <see cref="ClobberAnalysis"/> errs where the code does not tell it what a function writes.</summary>
internal enum Approximation
{
    /// <summary>What is not known writes every call-clobbered register: for the new code, whose writes a thunk must cover.</summary>
    Over,

    /// <summary>What is not known writes nothing the code does not prove: for the old code, whose callers rely on what it leaves alone.</summary>
    Under,
}

/// <summary>
/// The call-clobbered registers a function may write (<see cref="Set"/>) and, when part of its code could not be read,
/// why (<see cref="Unknown"/>): over-approximating, that part counts as every register; under-approximating, as none.
/// </summary>
internal readonly record struct FunctionWrites(ClobberSet Set, string? Unknown)
{
    /// <summary>A set known whole.</summary>
    public static FunctionWrites Exactly(ClobberSet set) => new(set, null);

    /// <summary>The writes of both; the first reason anything is unknown.</summary>
    public FunctionWrites Union(FunctionWrites other) => new(Set.Union(other.Set), Unknown ?? other.Unknown);
}

/// <summary>
/// Which call-clobbered registers a function may write, through every function it calls or tail-jumps to: decoded
/// from the code (Iced's instruction info), each function sized by its symbol or else by the FDE that begins at it.
/// The old functions' code comes from their files (what the process's callers were compiled against); the new
/// functions' from the linked payload, its calls into the target followed there.
/// <para>
/// The two sides err in opposite directions, as what is at risk is the new set less the old one.
/// <see cref="Approximation.Over"/> (the new code): what is not known — a call through the PLT or a pointer, an
/// indirect jump, code without a size, an IFUNC, a chain too deep — writes every register. <see cref="Approximation.Under"/>
/// (the old code and what it calls): only what the code proves counts, so callers may be assumed to rely on more
/// registers than they do (a thunk keeps one for nothing) but never on fewer. Two exceptions are exact, not guesses:
/// a call gcc could not see the end of (an indirect call, a PLT or other <c>jmp *slot</c> stub, an IFUNC) writes every
/// register in gcc's view too, as -fipa-ra uses a callee's own clobbers only where it binds locally and was compiled
/// before its caller, and assumes the rest clobber all; and an indirect jump is ignored, as gcc's jump tables stay
/// inside the function, whose every byte is scanned (were it a tail call through a pointer, gcc would have assumed
/// more: the set is smaller than gcc's, the safe side). Each direction keeps its own cache.
/// </para>
/// </summary>
internal sealed class ClobberAnalysis(TargetProcess target, Approximation approximation)
{
    private const int MaxDepth = 32;
    private const int MaxFunctionSize = 1 << 20;

    private readonly Dictionary<ulong, FunctionWrites> _known = [];
    private readonly HashSet<ulong> _inProgress = [];
    private int _cyclesCut;

    /// <summary>The registers the target's function at <paramref name="entry"/> may write, as its file has it.</summary>
    public FunctionWrites OfTargetFunction(ulong entry) => OfTarget(entry, 0);

    /// <summary>The registers the payload's function at <paramref name="entry"/> (linked in <paramref name="linked"/>) may write.</summary>
    /// <exception cref="InvalidOperationException">The analysis under-approximates: new code is never analysed that way.</exception>
    public FunctionWrites OfPayloadFunction(LinkedPayload linked, ulong entry)
    {
        if (approximation != Approximation.Over)
            throw new InvalidOperationException("a payload's new code is analysed over-approximating only");
        return OfPayload(linked, entry, 0);
    }

    private FunctionWrites OfTarget(ulong entry, int depth) => Remembered(entry, depth, () => ScanTarget(entry, depth));

    // What gcc assumes of a call whose callee it cannot see: every call-clobbered register, in either direction.
    private static FunctionWrites Everything => FunctionWrites.Exactly(ClobberSet.Everything);

    private FunctionWrites NotKnown(string why) =>
        approximation == Approximation.Over ? new(ClobberSet.Everything, why) : new(ClobberSet.None, why);

    // Each function's set once per walk, and remembered when it is complete. Recursion: a function's own writes are
    // counted by its outermost visit; a set computed below a cut cycle may lack the writes of a function still in
    // progress, so it is kept only for this walk.
    private FunctionWrites Remembered(ulong entry, int depth, Func<FunctionWrites> scan)
    {
        if (_known.TryGetValue(entry, out var known))
            return known;
        if (depth > MaxDepth)
            return NotKnown($"calls nested deeper than {MaxDepth} at 0x{entry:x}");
        if (!_inProgress.Add(entry))
        {
            _cyclesCut++;
            return FunctionWrites.Exactly(ClobberSet.None);
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

    private FunctionWrites ScanTarget(ulong entry, int depth)
    {
        var module = target.Modules.FirstOrDefault(m => m.Regions.Any(r => r.Contains(entry)));
        if (module is null)
            return NotKnown($"0x{entry:x} is in no module");
        var offset = entry - module.LoadBias;
        if (FunctionCode.IsJumpThroughSlot(module.Elf.ReadLoaded(offset, 16, executableOnly: true).Span, entry))
            return Everything; // a PLT entry, or a tail call through a pointer: gcc could not see where it goes
        // A stripped module's functions are sized by its debug file; without one, by their FDEs.
        var symbols = module.IsStripped ? module.Symbols.Concat(module.DebugSymbols) : module.Symbols;
        var symbol = symbols.Where(s => s.Address == entry && s.Size is > 0 and < MaxFunctionSize)
            .OrderBy(s => s.Type == ElfSymbolType.GnuIndirectFunction ? 1 : 0).FirstOrDefault();
        if (symbol?.Type == ElfSymbolType.GnuIndirectFunction)
            return Everything; // the resolver: the code that runs is chosen at load time, gcc assumes every register
        var size = symbol?.Type == ElfSymbolType.Function ? symbol.Size : FdeSize(module, offset);
        if (size is not (> 0 and < MaxFunctionSize))
            return NotKnown($"no symbol or FDE gives the size of the code at 0x{entry:x}");
        var code = module.Elf.ReadLoaded(offset, (int)size, executableOnly: true);
        if (code.Length != (int)size)
            return NotKnown($"the code at 0x{entry:x} cannot be read from {module.Name}");
        return Follow(FunctionCode.Scan(code.Span, entry), next => OfTarget(next, depth + 1));
    }

    private static ulong FdeSize(TargetModule module, ulong offset)
    {
        try
        {
            return module.CallFrames.TryFindFunction(offset, out var size) ? size : 0;
        }
        catch (ElfFormatException)
        {
            return 0;
        }
    }

    private FunctionWrites OfPayload(LinkedPayload linked, ulong entry, int depth) => Remembered(entry, depth, () => ScanPayload(linked, entry, depth));

    private FunctionWrites ScanPayload(LinkedPayload linked, ulong entry, int depth)
    {
        if (!linked.Text.Contains(entry))
            return OfTarget(entry, depth + 1);
        var function = linked.Payload.Elf.Symbols.FirstOrDefault(s => s.Type == ElfSymbolType.Function && s.Size > 0
            && s.SectionIndex is not (ElfSymbol.UndefinedSection or ElfSymbol.AbsoluteSection) && linked.AddressOf(s) == entry);
        if (function.Name is null)
            return StubTarget(linked, entry) is { } through ? OfTarget(through, depth + 1) : NotKnown($"payload code at 0x{entry:x} without a symbol");
        var offset = (int)(entry - linked.Text.Address);
        if (offset + (long)function.Size > linked.Text.Bytes.Length)
            return NotKnown($"{function.Name} runs past the payload's code");
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

    // What the code proves, and how each unknown counts in this direction:
    //   unknown call (indirect, far)  -> every register, both directions (gcc assumed so too)
    //   bytes that are not code       -> Over: every register; Under: nothing (the decode before them is not trusted)
    //   indirect jump                 -> Over: every register; Under: ignored (jump table: its targets are scanned)
    private FunctionWrites Follow(FunctionCode code, Func<ulong, FunctionWrites> callee)
    {
        if (code.UnknownCall is not null)
            return Everything;
        if (code.Undecodable is not null)
            return NotKnown(code.Undecodable);
        var writes = FunctionWrites.Exactly(code.Written);
        if (code.IndirectJump is not null)
        {
            if (approximation == Approximation.Over)
                return NotKnown(code.IndirectJump);
            writes = writes with { Unknown = $"{code.IndirectJump} (a jump table, or a tail call through a pointer)" };
        }
        foreach (var next in code.Calls.Concat(code.Exits))
        {
            writes = writes.Union(callee(next));
            if (writes.Set == ClobberSet.Everything)
                break;
        }
        return writes;
    }
}
