using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// Under <see cref="ConsistencyModel.Stack"/>, the check TextPoker runs inside the stop for an apply of functions
    /// <paramref name="replaced"/>: it names a thread with one of them (or a payload already redirecting one) active.
    /// Null under <see cref="ConsistencyModel.Entry"/>.
    /// </summary>
    private Func<IReadOnlyList<StoppedThread>, string?>? StackCheckForApply(IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> state) =>
        _options.Consistency == ConsistencyModel.Stack ? StackCheck(StackConsistency.ForApply(_target, replaced, state)) : null;

    /// <summary>Under <see cref="ConsistencyModel.Stack"/>, the check for a revert of <paramref name="payload"/>: no thread may have its code active.</summary>
    private Func<IReadOnlyList<StoppedThread>, string?>? StackCheckForRevert(AppliedPayloadInfo payload) =>
        _options.Consistency == ConsistencyModel.Stack ? StackCheck(StackConsistency.ForRevert(payload)) : null;

    /// <summary>Under <see cref="ConsistencyModel.Stack"/>, the check for a replace: the new payload's old functions and every reverted payload's code.</summary>
    private Func<IReadOnlyList<StoppedThread>, string?>? StackCheckForReplace(IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> replaced, IEnumerable<AppliedPayloadInfo> reverted) =>
        _options.Consistency == ConsistencyModel.Stack ? StackCheck(StackConsistency.ForReplace(_target, replaced, reverted)) : null;

    private Func<IReadOnlyList<StoppedThread>, string?> StackCheck(List<CodeRange> ranges)
    {
        var scanner = new StackScanner(_target, ranges);
        return threads => scanner.FindObstacle(threads) is { } obstacle ? $"{obstacle} (stack consistency)" : null;
    }
}
