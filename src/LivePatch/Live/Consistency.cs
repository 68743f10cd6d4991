using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>What must hold, besides the bytes themselves, before a live patch changes which code runs.</summary>
public enum ConsistencyModel
{
    /// <summary>
    /// No thread is stopped inside the bytes being changed (it is moved to a trampoline or waited for). A thread may
    /// still be running an old function's body, which it entered before the change, and finishes it there.
    /// </summary>
    Entry,

    /// <summary>
    /// Entry, and no thread has code that becomes inactive running or in a frame of its stack: on apply the old
    /// functions being replaced, on revert the payload's code being taken out. Each thread is unwound with the
    /// modules' <c>.eh_frame</c>, so only real frames count; above a frame without CFI (JIT code, payload code) its
    /// stack is scanned conservatively, any word that looks like an address in that code counting: a live frame is
    /// never missed.
    /// </summary>
    Stack,
}

/// <summary>
/// The code that becomes inactive when a payload is applied, reverted or replaced: what the stack consistency model
/// (<see cref="ConsistencyModel.Stack"/>) looks for on every stopped thread's stack.
/// </summary>
internal static class StackConsistency
{
    /// <summary>
    /// Under <see cref="ConsistencyModel.Stack"/>, the check TextPoker runs inside the stop for an apply of functions
    /// <paramref name="replaced"/>: it names a thread with one of them (or a payload already redirecting one) active.
    /// Null under <see cref="ConsistencyModel.Entry"/>.
    /// </summary>
    public static Func<IReadOnlyList<StoppedThread>, string?>? CheckForApply(LiveSession session, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> record) =>
        session.Options.Consistency == ConsistencyModel.Stack ? Check(session, ForApply(session.Target, replaced, record)) : null;

    /// <summary>Under <see cref="ConsistencyModel.Stack"/>, the check for a revert of <paramref name="payload"/>: no thread may have its code active.</summary>
    public static Func<IReadOnlyList<StoppedThread>, string?>? CheckForRevert(LiveSession session, AppliedPayloadInfo payload) =>
        session.Options.Consistency == ConsistencyModel.Stack ? Check(session, ForRevert(payload)) : null;

    /// <summary>Under <see cref="ConsistencyModel.Stack"/>, the check for a replace: the new payload's old functions and every reverted payload's code.</summary>
    public static Func<IReadOnlyList<StoppedThread>, string?>? CheckForReplace(LiveSession session, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> reverted) =>
        session.Options.Consistency == ConsistencyModel.Stack ? Check(session, ForReplace(session.Target, replaced, reverted)) : null;

    private static Func<IReadOnlyList<StoppedThread>, string?> Check(LiveSession session, List<CodeRange> ranges)
    {
        var unwinder = new StackUnwinder(session.Target, ranges);
        return threads => unwinder.FindObstacle(threads) is { } obstacle ? $"{obstacle} (stack consistency)" : null;
    }

    /// <summary>
    /// Apply: each old function from just after its patched entry to its end (a thread at the entry or before it
    /// takes the new jump, so it is not inside), and the code of applied payloads that already redirect one of
    /// these functions (with stacking, their new functions stop being called too).
    /// </summary>
    public static List<CodeRange> ForApply(TargetProcess target, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> state)
    {
        var functions = replaced.ToList();
        var patched = functions.Select(f => f.PatchAddress).ToHashSet();
        var ranges = functions.Select(f => OldFunction(target, f.Symbol, f.PatchAddress)).ToList();
        foreach (var payload in state.Where(p => p.State == PayloadState.Applied && p.Functions.Any(f => patched.Contains(f.PatchAddress))))
            ranges.AddRange(PayloadCode(payload));
        return Disjoint(ranges);
    }

    /// <summary>Revert: the payload's text, every byte of it (its new functions and the helpers they call stop being reached).</summary>
    public static List<CodeRange> ForRevert(AppliedPayloadInfo payload) => Disjoint(PayloadCode(payload));

    /// <summary>Replace: the new payload's old functions as for apply, and the code of every payload it reverts.</summary>
    public static List<CodeRange> ForReplace(TargetProcess target, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> reverted)
    {
        var ranges = replaced.Select(f => OldFunction(target, f.Symbol, f.PatchAddress)).ToList();
        foreach (var payload in reverted)
            ranges.AddRange(PayloadCode(payload));
        return Disjoint(ranges);
    }

    /// <summary>
    /// An old function from its symbol: [address, address + size), counted from just after the patch address. A symbol
    /// without a size (hand-written assembly) runs to the next symbol of its module or to the end of its mapping.
    /// </summary>
    public static CodeRange OldFunction(TargetProcess target, TargetSymbol symbol, ulong patchAddress)
    {
        var end = symbol.Size != 0 ? symbol.Address + symbol.Size : UnsizedEnd(target, symbol);
        return new CodeRange(symbol.Address, end, patchAddress + 1, symbol.QualifiedName);
    }

    /// <summary>
    /// A payload's text blocks, split at its new functions so that messages name the function: each piece runs from a
    /// new function to the next (static helpers laid out after a function count under its name).
    /// </summary>
    public static IEnumerable<CodeRange> PayloadCode(AppliedPayloadInfo payload)
    {
        foreach (var block in payload.Memory.Where(m => m.Use == "text" && m.Size > 0))
        {
            var end = block.Address + block.Size;
            var cursor = block.Address;
            var name = $"payload '{payload.Name}' text";
            foreach (var function in payload.Functions.Where(f => f.NewAddress >= block.Address && f.NewAddress < end).DistinctBy(f => f.NewAddress).OrderBy(f => f.NewAddress))
            {
                if (function.NewAddress > cursor)
                    yield return new CodeRange(cursor, function.NewAddress, cursor, name);
                cursor = function.NewAddress;
                name = $"{function.NewSymbol} of payload '{payload.Name}'";
            }
            yield return new CodeRange(cursor, end, cursor, name);
        }
    }

    private static ulong UnsizedEnd(TargetProcess target, TargetSymbol symbol)
    {
        var mapping = target.ReadMemoryMap().Find(symbol.Address);
        var end = mapping?.End ?? symbol.Address + 1;
        foreach (var other in symbol.Module.Symbols)
            if (other.Address > symbol.Address && other.Address < end)
                end = other.Address;
        return end;
    }

    // The same code reached twice (one payload listed for two functions) is one range; distinct ranges never overlap.
    private static List<CodeRange> Disjoint(IEnumerable<CodeRange> ranges) => [.. ranges.DistinctBy(r => (r.Start, r.End))];
}
