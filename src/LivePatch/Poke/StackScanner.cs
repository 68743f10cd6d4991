using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>
/// Code that no thread may have active: the bytes [<paramref name="Start"/>, <paramref name="End"/>), named for
/// messages. A RIP or return address in [<paramref name="ActiveFrom"/>, End) runs or returns into the body; one from
/// Start up to ActiveFrom only enters the code from its beginning, where the change being made redirects it.
/// </summary>
/// <param name="Start">The first byte.</param>
/// <param name="End">One past the last byte.</param>
/// <param name="ActiveFrom">The first address that counts (Start, or just after the patched entry).</param>
/// <param name="Name">How messages name the code (<c>worker!compute</c>).</param>
internal readonly record struct CodeRange(ulong Start, ulong End, ulong ActiveFrom, string Name)
{
    /// <summary>True when <paramref name="address"/> lies in the part that counts.</summary>
    public bool IsActiveAt(ulong address) => address >= ActiveFrom && address < End;
}

/// <summary>
/// A thread with code of a <see cref="CodeRange"/> active: its RIP (<paramref name="StackAddress"/> null) or the
/// stack word at <paramref name="StackAddress"/> holds <paramref name="Value"/>, inside <paramref name="Range"/>.
/// </summary>
internal readonly record struct StackHit(int Tid, CodeRange Range, ulong Value, ulong? StackAddress, ulong Rsp)
{
    public override string ToString() => StackAddress is { } at
        ? $"thread {Tid} has {Range.Name} active: return address 0x{Value:x} (offset 0x{Value - Range.Start:x}) at rsp+0x{at - Rsp:x} (0x{at:x}) on its stack"
        : $"thread {Tid} is running {Range.Name} (rip 0x{Value:x}, offset 0x{Value - Range.Start:x})";
}

/// <summary>What one scan of every stopped thread found.</summary>
/// <param name="Hits">Threads with code of a range active, in thread order, at most <see cref="StackScanner.MaxHits"/>.</param>
/// <param name="Unproven">Threads whose stack could not be read whole, each with the reason.</param>
/// <param name="BytesScanned">Stack bytes read and scanned, every thread together.</param>
internal sealed record StackScan(IReadOnlyList<StackHit> Hits, IReadOnlyList<string> Unproven, long BytesScanned)
{
    /// <summary>The first thing that stands in the way, in words for a message; null when nothing does.</summary>
    public string? Obstacle => Hits.Count > 0 ? Hits[0].ToString() : Unproven.Count > 0 ? Unproven[0] : null;
}

/// <summary>
/// Finds, inside a stop, threads that have code of some ranges active: the RIP in a range, or a word of the live stack
/// (from RSP to the end of the mapping that holds RSP: <c>[stack]</c> for the main thread, an anonymous mapping for the
/// others) that is an address in a range. Conservative: any aligned word that looks like a return address into a range
/// counts, so a stale value left in a live frame can delay or fail a change, but no live frame is missed. Each thread's
/// stack is read with one <c>/proc/PID/mem</c> read into a reused buffer; the mapping holding each RSP is looked up in
/// every scan, inside the stop, because threads created or ended meanwhile map and unmap stacks. The scan runs once or
/// a few times per process, so its loops are compiled optimized at once rather than left to tiered compilation's first
/// tier.
/// </summary>
internal sealed class StackScanner
{
    /// <summary>Stacks longer than this from RSP to their mapping's end are not read: such a thread counts as unproven.</summary>
    public const int DefaultLimit = 8 << 20;

    /// <summary>Hits kept per scan; the first one makes the message.</summary>
    public const int MaxHits = 64;

    private readonly TargetProcess _target;
    private readonly MappingBounds _mappings;
    private readonly CodeRange[] _ranges;
    private readonly ulong _lowest;
    private readonly ulong _highest;
    private readonly long _limit;
    private byte[] _buffer = new byte[64 << 10];

    /// <summary>Prepares a scanner for <paramref name="ranges"/> (before the stop: sorting and buffers happen here).</summary>
    /// <exception cref="ArgumentException">A range is empty, or two ranges overlap.</exception>
    public StackScanner(TargetProcess target, IEnumerable<CodeRange> ranges, int limit = DefaultLimit)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 8);
        _target = target;
        _mappings = new MappingBounds(target.Pid);
        _limit = limit;
        _ranges = [.. ranges.OrderBy(r => r.Start)];
        for (var i = 0; i < _ranges.Length; i++)
        {
            var range = _ranges[i];
            if (range.End <= range.Start || range.ActiveFrom < range.Start)
                throw new ArgumentException($"code range {range.Name} [0x{range.Start:x}, 0x{range.End:x}) from 0x{range.ActiveFrom:x} is empty or inverted", nameof(ranges));
            if (i > 0 && range.Start < _ranges[i - 1].End)
                throw new ArgumentException($"code ranges {_ranges[i - 1].Name} and {range.Name} overlap at 0x{range.Start:x}", nameof(ranges));
        }
        _lowest = _ranges.Length == 0 ? ulong.MaxValue : _ranges[0].Start;
        _highest = _ranges.Length == 0 ? 0 : _ranges[^1].End;
    }

    /// <summary>The ranges, in address order.</summary>
    public IReadOnlyList<CodeRange> Ranges => _ranges;

    /// <summary>The obstacle text of a scan of <paramref name="threads"/>, or null: the shape TextPoker's check takes.</summary>
    public string? FindObstacle(IReadOnlyList<StoppedThread> threads) => Scan(threads).Obstacle;

    /// <summary>
    /// Scans every stopped thread: its RIP, then its live stack, stopping at a thread's first hit unless
    /// <paramref name="everyHit"/>. Runs inside the stop, on the tracer thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public StackScan Scan(IReadOnlyList<StoppedThread> threads, bool everyHit = false)
    {
        ArgumentNullException.ThrowIfNull(threads);
        var hits = new List<StackHit>();
        var unproven = new List<string>();
        long scanned = 0;
        if (_ranges.Length == 0)
            return new StackScan(hits, unproven, 0);
        _mappings.Refresh();
        try
        {
            ScanThreads(threads, everyHit, hits, unproven, ref scanned);
        }
        finally
        {
            _mappings.Release();
        }
        return new StackScan(hits, unproven, scanned);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ScanThreads(IReadOnlyList<StoppedThread> threads, bool everyHit, List<StackHit> hits, List<string> unproven, ref long scanned)
    {
        foreach (var thread in threads)
        {
            if (RangeAt(thread.Rip) is { } running)
            {
                Add(hits, new StackHit(thread.Tid, running, thread.Rip, null, thread.Rsp));
                if (!everyHit)
                    continue;
            }
            if (_mappings.Find(thread.Rsp) is not { } stack)
            {
                unproven.Add($"thread {thread.Tid}: its rsp 0x{thread.Rsp:x} is in no mapping, so its stack cannot be scanned");
                continue;
            }
            ScanWords(thread.Tid, thread.Rsp, thread.Rsp, stack.End, everyHit, hits, unproven, ref scanned);
        }
    }

    /// <summary>
    /// Scans the words of one thread's stack from <paramref name="from"/> (its RSP, or a frame's stack pointer where
    /// unwinding stopped) to <paramref name="end"/>, the end of the mapping holding it; hits name
    /// <paramref name="rsp"/> as the thread's RSP. False when the stack could not be read (said in <paramref name="unproven"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal bool ScanWords(int tid, ulong rsp, ulong from, ulong end, bool everyHit, List<StackHit> hits, List<string> unproven, ref long scanned)
    {
        // Return addresses sit in 8-byte-aligned words: the ABI keeps RSP a multiple of 8 (of 16 at each call).
        var start = (from + 7) & ~7UL;
        var length = end > start ? (end - start) & ~7UL : 0;
        if (length > (ulong)_limit)
        {
            unproven.Add($"thread {tid}: its stack from rsp 0x{from:x} to the end of its mapping at 0x{end:x} is {Size((long)length)}, beyond the {Size(_limit)} scan limit, so no frame can be ruled out");
            return false;
        }
        if (length == 0)
            return true;
        if ((ulong)_buffer.Length < length)
            _buffer = GC.AllocateUninitializedArray<byte>((int)Math.Min(_limit, (long)System.Numerics.BitOperations.RoundUpToPowerOf2(length)));
        var bytes = _buffer.AsSpan(0, (int)length);
        if (!_target.TryReadMemory(start, bytes))
        {
            unproven.Add($"thread {tid}: its stack [0x{start:x}, 0x{end:x}) could not be read");
            return false;
        }
        scanned += (long)length;
        var words = MemoryMarshal.Cast<byte, ulong>(bytes);
        for (var i = NextCandidate(words, 0); i < words.Length; i = NextCandidate(words, i + 1))
        {
            if (RangeAt(words[i]) is not { } range)
                continue;
            Add(hits, new StackHit(tid, range, words[i], start + (ulong)i * 8, rsp));
            if (!everyHit)
                break; // one hit is enough to name the thread
        }
        return true;
    }

    /// <summary>The index of the first word from <paramref name="start"/> between the lowest and highest range bounds, or the length.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int NextCandidate(ReadOnlySpan<ulong> words, int start)
    {
        var lowest = _lowest;
        var span = _highest - lowest;
        for (var i = start; i < words.Length; i++)
            if (words[i] - lowest < span) // one unsigned comparison: below lowest wraps around to a large value
                return i;
        return words.Length;
    }

    private static string Size(long bytes) => bytes >= 1 << 20 ? $"{bytes >> 20} MiB" : bytes >= 1 << 10 ? $"{bytes >> 10} KiB" : $"{bytes} bytes";

    private static void Add(List<StackHit> hits, StackHit hit)
    {
        if (hits.Count < MaxHits)
            hits.Add(hit);
    }

    /// <summary>The range whose active part holds <paramref name="address"/>, or null (binary search: the ranges are disjoint).</summary>
    internal CodeRange? RangeAt(ulong address)
    {
        if (address < _lowest || address >= _highest)
            return null;
        int low = 0, high = _ranges.Length - 1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            var range = _ranges[middle];
            if (address < range.Start)
                high = middle - 1;
            else if (address >= range.End)
                low = middle + 1;
            else
                return range.IsActiveAt(address) ? range : null;
        }
        return null;
    }
}
