using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Globalization;
using System.Text;
using LivePatch.Elf;
using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>
/// Where unwinding a thread stopped before its outermost frame: frame <paramref name="Frame"/> at
/// <paramref name="Pc"/> could not be unwound (<paramref name="Why"/>), so the stack from its stack pointer
/// <paramref name="Sp"/> to the end of its mapping was scanned word by word instead.
/// </summary>
internal readonly record struct UnwindFallback(int Tid, int Frame, ulong Pc, ulong Sp, string Why);

/// <summary>
/// A thread with code of a <see cref="CodeRange"/> active: frame <paramref name="Frame"/>'s PC (its RIP for frame 0,
/// a return address after) lies in <paramref name="Range"/>; or, when <paramref name="Scanned"/> is set, a word the
/// conservative scan found above the frame where unwinding stopped (<paramref name="Fallback"/>).
/// <paramref name="Chain"/> holds the PCs of the frames unwound, innermost first.
/// </summary>
internal sealed record FrameHit(int Tid, CodeRange Range, int Frame, ulong Pc, ulong[] Chain, StackHit? Scanned, UnwindFallback? Fallback)
{
    /// <summary>Frames named in a message at most; the rest are counted.</summary>
    public const int NamedFrames = 12;

    /// <summary>The hit in words, its frames named by <paramref name="code"/>.</summary>
    public string Describe(CodeMap code)
    {
        var text = new StringBuilder();
        if (Scanned is { } scanned && Fallback is { } fallback)
            text.Append(CultureInfo.InvariantCulture, $"{scanned}, found by the conservative scan: frame #{fallback.Frame} at {code.Name(fallback.Pc)} (0x{fallback.Pc:x}) {fallback.Why}, so its stack was scanned from rsp 0x{fallback.Sp:x}");
        else if (Frame == 0)
            text.Append(CultureInfo.InvariantCulture, $"thread {Tid} is running {Range.Name} (rip 0x{Pc:x}, offset 0x{Pc - Range.Start:x})");
        else
            text.Append(CultureInfo.InvariantCulture, $"thread {Tid} has {Range.Name} active: return address 0x{Pc:x} (offset 0x{Pc - Range.Start:x}) of frame #{Frame}");
        if (Chain.Length > 0)
        {
            text.Append("; frames ");
            for (var i = 0; i < Math.Min(Chain.Length, NamedFrames); i++)
                text.Append(i == 0 ? "" : " ← ").Append(code.Name(Chain[i]));
            if (Chain.Length > NamedFrames)
                text.Append(CultureInfo.InvariantCulture, $" ← ... ({Chain.Length - NamedFrames} more)");
        }
        return text.ToString();
    }
}

/// <summary>What one unwind of every stopped thread found.</summary>
/// <param name="Hits">Threads with code of a range active, in thread order, at most <see cref="StackScanner.MaxHits"/>.</param>
/// <param name="Unproven">Threads whose stack could not be read where it had to be scanned, each with the reason.</param>
/// <param name="Fallbacks">Frames that could not be unwound, above which the stack was scanned.</param>
/// <param name="Frames">Frames unwound, every thread together.</param>
/// <param name="BytesScanned">Stack bytes the conservative scan read, every thread together.</param>
internal sealed record StackUnwind(IReadOnlyList<FrameHit> Hits, IReadOnlyList<string> Unproven, IReadOnlyList<UnwindFallback> Fallbacks, int Frames, long BytesScanned)
{
    /// <summary>The first thing that stands in the way, in words for a message; null when nothing does.</summary>
    public string? Obstacle(CodeMap code) => Hits.Count > 0 ? Hits[0].Describe(code) : Unproven.Count > 0 ? Unproven[0] : null;
}

/// <summary>
/// Finds, inside a stop, threads that have code of some ranges active, from their real frames: each stopped thread
/// is unwound from its registers with the modules' <c>.eh_frame</c> (<see cref="CallFrameInfo"/>, prepared before the
/// stop in a <see cref="CodeMap"/>), and each frame's PC — the RIP, then each return address — is checked against the
/// ranges. A stale return address left in a dead stack slot is not a frame, so it no longer counts. Where a frame
/// cannot be unwound reliably (its PC in no module or in code without CFI: JIT code, payloads, trampolines; a rule
/// not understood; a read that fails; a CFA that does not climb the thread's stack), the stack from that frame's
/// stack pointer to the end of its mapping is scanned word by word as <see cref="StackScanner"/> does, and the
/// fallback is recorded: the check is exact where the CFI is, conservative elsewhere, and never misses a frame the
/// scan would have seen. Stack words are read through a window grown as frames climb (one <c>/proc/PID/mem</c> read
/// per 4 KiB at first), not the whole stack.
/// </summary>
internal sealed class StackUnwinder
{
    /// <summary>Frames unwound per thread at most; deeper, the rest of its stack is scanned.</summary>
    public const int MaxDepth = 1024;

    // rbx, rbp, r12-r15: a call keeps them, so a frame without a rule for one has its callee's value.
    private const uint CalleeSaved = (1u << 3) | (1u << 6) | (1u << 12) | (1u << 13) | (1u << 14) | (1u << 15);
    private const int Rsp = 7;
    private const int Ra = CallFrameInfo.ReturnAddress;

    private readonly StackScanner _scanner;
    private readonly MappingBounds _mappings;
    private readonly StackWindow _window;
    private readonly ulong[] _chain = new ulong[MaxDepth + 1];

    // Rows found, by the address looked up: threads share most frames (libc's sleeps, thread start), and a retried
    // stop meets the same ones again. A row depends only on the module's CFI and the address, so it never goes stale.
    private readonly Dictionary<ulong, (UnwindRow Row, string? Why)> _rows = [];
    private readonly int[] _checked;
    private int _stops;

    /// <summary>Prepares an unwinder for <paramref name="ranges"/>: the code map and every module's CFI are read here, before the stop.</summary>
    /// <exception cref="ArgumentException">A range is empty, or two ranges overlap.</exception>
    public StackUnwinder(TargetProcess target, IEnumerable<CodeRange> ranges, int limit = StackScanner.DefaultLimit)
        : this(target, ranges, new CodeMap(target), limit)
    {
    }

    /// <summary>Prepares an unwinder with a code map already read.</summary>
    public StackUnwinder(TargetProcess target, IEnumerable<CodeRange> ranges, CodeMap code, int limit = StackScanner.DefaultLimit)
    {
        ArgumentNullException.ThrowIfNull(target);
        _scanner = new StackScanner(target, ranges, limit);
        _mappings = new MappingBounds(target.Pid);
        _window = new StackWindow(target);
        Code = code;
        _checked = new int[code.Entries.Count];
    }

    /// <summary>The code and CFI the unwinder knows.</summary>
    public CodeMap Code { get; }

    /// <summary>The ranges, in address order.</summary>
    public IReadOnlyList<CodeRange> Ranges => _scanner.Ranges;

    /// <summary>The obstacle text of an unwind of <paramref name="threads"/>, or null: the shape TextPoker's check takes.</summary>
    public string? FindObstacle(IReadOnlyList<StoppedThread> threads) => Unwind(threads).Obstacle(Code);

    /// <summary>
    /// Unwinds every stopped thread and checks each frame, stopping at a thread's first hit unless
    /// <paramref name="everyHit"/> (its frame chain is still unwound whole, for the message). Inside the stop, on the tracer thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public StackUnwind Unwind(IReadOnlyList<StoppedThread> threads, bool everyHit = false)
    {
        ArgumentNullException.ThrowIfNull(threads);
        var hits = new List<FrameHit>();
        var unproven = new List<string>();
        var fallbacks = new List<UnwindFallback>();
        long scanned = 0;
        var frames = 0;
        if (Ranges.Count == 0)
            return new StackUnwind(hits, unproven, fallbacks, 0, 0);
        _mappings.Refresh();
        _stops++;
        try
        {
            foreach (var thread in threads)
                frames += UnwindThread(thread, everyHit, hits, unproven, fallbacks, ref scanned);
        }
        finally
        {
            _mappings.Release();
            _window.Release();
        }
        return new StackUnwind(hits, unproven, fallbacks, frames, scanned);
    }

    // One thread: frames from its registers until the outermost one, each PC checked; the scan above a frame that
    // cannot be unwound. Returns the frames unwound.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int UnwindThread(StoppedThread thread, bool everyHit, List<FrameHit> hits, List<string> unproven, List<UnwindFallback> fallbacks, ref long scanned)
    {
        var firstHit = hits.Count;
        var found = false;
        if (_mappings.Find(thread.Rsp) is not { } stack)
        {
            if (_scanner.RangeAt(thread.Rip) is { } running)
                AddHit(hits, new FrameHit(thread.Tid, running, 0, thread.Rip, [thread.Rip], null, null));
            else
                unproven.Add($"thread {thread.Tid}: its rsp 0x{thread.Rsp:x} is in no mapping, so its stack cannot be scanned");
            return 0;
        }
        var registers = thread.Registers.Values;
        var known = thread.Registers.IsSet ? (1u << CallFrameInfo.Registers) - 1 : 0;
        var pc = thread.Rip;
        var sp = thread.Rsp;
        var afterSignal = true; // frame 0's PC is where it stopped, not a return address
        _window.Reset(stack.Start, stack.End, sp);
        for (var depth = 0; ; depth++)
        {
            _chain[depth] = pc;
            if ((!found || everyHit) && _scanner.RangeAt(pc) is { } range)
            {
                AddHit(hits, new FrameHit(thread.Tid, range, depth, pc, [], null, null));
                found = true;
            }
            var outermost = false;
            var why = depth == MaxDepth ? $"is deeper than {MaxDepth} frames"
                : known == 0 ? "has no registers read"
                : Step(ref registers, ref known, ref pc, ref sp, ref afterSignal, ref stack, out outermost);
            if (why is null && !outermost)
                continue;
            var length = depth + 1;
            if (why is not null && (!found || everyHit))
            {
                // Every frame above this one keeps its return address at or above its stack pointer.
                var fallback = new UnwindFallback(thread.Tid, depth, pc, sp, why);
                fallbacks.Add(fallback);
                var words = new List<StackHit>();
                _scanner.ScanWords(thread.Tid, thread.Rsp, sp, stack.End, everyHit, words, unproven, ref scanned);
                foreach (var word in words)
                    AddHit(hits, new FrameHit(thread.Tid, word.Range, depth, word.Value, [], word, fallback));
            }
            else if (why is not null)
            {
                fallbacks.Add(new UnwindFallback(thread.Tid, depth, pc, sp, why));
            }
            var chain = _chain.AsSpan(0, length).ToArray();
            for (var i = firstHit; i < hits.Count; i++)
                hits[i] = hits[i] with { Chain = chain };
            return length;
        }
    }

    /// <summary>
    /// Unwinds one frame: from the registers at <paramref name="pc"/> to its caller's, reading its CFI. Null when it
    /// went up one frame (or reached the outermost); else why it could not, in words for a message.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private string? Step(ref RegisterValues registers, ref uint known, ref ulong pc, ref ulong sp, ref bool afterSignal, ref (ulong Start, ulong End) stack, out bool outermost)
    {
        outermost = false;
        // A return address follows the call: the call itself (pc - 1) is in the caller's FDE and row. After a signal
        // frame the PC is the interrupted instruction itself.
        var lookup = afterSignal ? pc : pc - 1;
        var index = Code.IndexOf(lookup);
        if (index < 0)
            return "is in no module";
        var entry = Code.Entries[index];
        // The map was read before the stop: once per stop, each mapping used is checked to be still the one it was.
        if (_checked[index] != _stops)
        {
            if (_mappings.Find(entry.Start) != (entry.Start, entry.End))
                return $"is in 0x{entry.Start:x}-0x{entry.End:x}, mapped anew since the unwinder read {entry.Name} there";
            _checked[index] = _stops;
        }
        if (entry.Frames is null)
            return $"is in {entry.Name}, whose CFI could not be read";
        if (!_rows.TryGetValue(lookup, out var found))
        {
            found.Why = entry.Frames.TryFindRow(lookup - entry.Bias, out found.Row, out var missing) ? null : $"has {missing} in {entry.Name}";
            _rows[lookup] = found;
        }
        if (found.Why is not null)
            return found.Why;
        ref readonly var row = ref CollectionsMarshal.GetValueRefOrNullRef(_rows, lookup).Row;
        ReadOnlySpan<ulong> values = registers;
        ulong cfa;
        if (row.CfaExpressionLength != 0)
        {
            if (!DwarfExpression.TryEvaluate(entry.Frames.Data.Slice(row.CfaExpressionOffset, row.CfaExpressionLength), values, known, _window, null, out cfa))
                return "has a CFA expression that could not be evaluated";
        }
        else
        {
            if ((known & (1u << row.CfaRegister)) == 0)
                return "has its CFA in a register whose value is lost";
            cfa = registers[row.CfaRegister] + (ulong)row.CfaOffset;
        }

        var caller = default(RegisterValues);
        uint callerKnown = 0;
        for (var r = 0; r < CallFrameInfo.Registers; r++)
        {
            var rule = row.Rules[r];
            ulong value;
            switch (rule.Kind)
            {
                case RuleKind.SameValue:
                    if (r == Rsp)
                    {
                        value = cfa; // the caller's stack pointer is the CFA by definition
                        break;
                    }
                    if (r == Ra || (CalleeSaved & (1u << r)) == 0 || (known & (1u << r)) == 0)
                        continue; // a call-clobbered register's value in the caller is unknown
                    value = registers[r];
                    break;
                case RuleKind.Undefined:
                    if (r == Ra)
                    {
                        outermost = true; // glibc marks _start and clone3 so: the thread's first frame
                        return null;
                    }
                    continue;
                case RuleKind.Offset:
                    if (!_window.TryReadWord(cfa + (ulong)rule.Value, out value))
                        return $"saves register {r} at 0x{cfa + (ulong)rule.Value:x}, which could not be read";
                    break;
                case RuleKind.ValueOffset:
                    value = cfa + (ulong)rule.Value;
                    break;
                case RuleKind.Register:
                    if ((known & (1u << (int)rule.Value)) == 0)
                        return $"keeps register {r} in register {rule.Value}, whose value is lost";
                    value = registers[(int)rule.Value];
                    break;
                case RuleKind.Expression:
                case RuleKind.ValueExpression:
                    {
                        var expression = entry.Frames.Data.Slice(rule.ExpressionOffset, rule.ExpressionLength);
                        if (!DwarfExpression.TryEvaluate(expression, values, known, _window, cfa, out value))
                            return $"has an expression for register {r} that could not be evaluated";
                        if (rule.Kind == RuleKind.Expression && !_window.TryReadWord(value, out value))
                            return $"saves register {r} where it could not be read";
                        break;
                    }
                default:
                    return "has a rule not understood";
            }
            caller[r] = value;
            callerKnown |= 1u << r;
        }
        if ((callerKnown & (1u << Ra)) == 0)
            return "has no rule for its return address";
        if (caller[Ra] == 0)
        {
            outermost = true;
            return null;
        }
        var callerSp = (callerKnown & (1u << Rsp)) != 0 ? caller[Rsp] : cfa;
        if (callerSp > stack.Start && callerSp <= stack.End)
        {
            // On the same stack, the caller's frame lies above this one.
            if (callerSp <= sp)
                return $"gives a CFA 0x{callerSp:x} not above its stack pointer 0x{sp:x}";
        }
        else if (row.IsSignalFrame && _mappings.Find(callerSp - 1) is { } other)
        {
            // A handler on an alternate signal stack: the interrupted frames are on the thread's own stack.
            stack = other;
            _window.Reset(other.Start, other.End, callerSp);
        }
        else
        {
            return $"gives a CFA 0x{callerSp:x} outside its stack [0x{stack.Start:x}, 0x{stack.End:x})";
        }
        caller[Rsp] = callerSp;
        callerKnown |= 1u << Rsp;
        registers = caller;
        known = callerKnown;
        pc = caller[Ra];
        sp = callerSp;
        afterSignal = row.IsSignalFrame;
        return null;
    }

    private static void AddHit(List<FrameHit> hits, FrameHit hit)
    {
        if (hits.Count < StackScanner.MaxHits)
            hits.Add(hit);
    }

    /// <summary>
    /// A thread's stack as the unwinder reads it: a window from the first frame's stack pointer, grown as frames climb
    /// (doubling from 4 KiB, up to the mapping's end); a word elsewhere is one read of its own.
    /// </summary>
    private sealed class StackWindow(TargetProcess target) : IWordReader
    {
        private const int FirstRead = 16 << 10;

        private byte[] _buffer = new byte[64 << 10];
        private ulong _start;
        private ulong _end;
        private ulong _limit;

        public void Reset(ulong mappingStart, ulong mappingEnd, ulong sp)
        {
            _ = mappingStart;
            _start = Math.Max(sp & ~7UL, mappingStart);
            _end = _start;
            _limit = mappingEnd;
        }

        public void Release()
        {
            _start = _end = _limit = 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public bool TryReadWord(ulong address, out ulong value)
        {
            value = 0;
            if (address >= _start && address <= _limit - 8 && _limit >= 8)
            {
                if (address + 8 > _end && !Grow(address + 8))
                    return false;
                value = BinaryPrimitives.ReadUInt64LittleEndian(_buffer.AsSpan((int)(address - _start), 8));
                return true;
            }
            Span<byte> word = stackalloc byte[8];
            if (!target.TryReadMemory(address, word))
                return false;
            value = BinaryPrimitives.ReadUInt64LittleEndian(word);
            return true;
        }

        private bool Grow(ulong needed)
        {
            var length = Math.Max((ulong)FirstRead, (_end - _start) * 2);
            while (_start + length < needed)
                length *= 2;
            var end = Math.Min(_start + length, _limit);
            if (end - _start > int.MaxValue / 2)
                return false;
            if ((ulong)_buffer.Length < end - _start)
                Array.Resize(ref _buffer, (int)System.Numerics.BitOperations.RoundUpToPowerOf2(end - _start));
            if (!target.TryReadMemory(_end, _buffer.AsSpan((int)(_end - _start), (int)(end - _end))))
                return false;
            _end = end;
            return true;
        }
    }
}
