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

public sealed partial class LivePatcher
{
    /// <summary>
    /// Whatever the model: a call among the displaced instructions that ends inside the jump (a 2-byte <c>call *%rax</c>
    /// at the entry, say) leaves its return address there, and a thread still in that callee would come back into the
    /// middle of the jump. Such return addresses are looked for on every stack inside the stop; null when no displaced
    /// call ends inside a jump.
    /// </summary>
    private Func<IReadOnlyList<StoppedThread>, string?>? ReturnsIntoJumps(IEnumerable<AppliedFunctionInfo> functions)
    {
        var ranges = new List<CodeRange>();
        foreach (var function in functions.Where(f => f.DisplacedBytes is not null))
        {
            var decoder = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(Convert.FromHexString(function.DisplacedBytes!)), function.PatchAddress);
            while (decoder.IP < function.PatchAddress + JumpLength - 1)
            {
                decoder.Decode(out var instruction);
                if (instruction.IsInvalid)
                    break;
                if (instruction.Mnemonic == Iced.Intel.Mnemonic.Call && instruction.NextIP < function.PatchAddress + JumpLength) // syscall pushes nothing
                    ranges.Add(new CodeRange(instruction.NextIP, instruction.NextIP + 1, instruction.NextIP, $"{function.Name} (a call ending inside the jump)"));
            }
        }
        if (ranges.Count == 0)
            return null;
        var scanner = new StackScanner(_target, ranges);
        return threads => scanner.FindObstacle(threads) is { } obstacle ? $"{obstacle}: it would return into the middle of the jump" : null;
    }

    private static Func<IReadOnlyList<StoppedThread>, string?>? Either(Func<IReadOnlyList<StoppedThread>, string?>? first, Func<IReadOnlyList<StoppedThread>, string?>? second) =>
        first is null ? second : second is null ? first : threads => first(threads) ?? second(threads);
}
