using Iced.Intel;
using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// A branch of an old function back into the bytes its jump replaces: gcc -Os (and -O2 on some loops) puts a loop
/// head inside the first five bytes. A thread in the body would later take that branch into the middle of the jump;
/// a trampoline would run the body and come back into the jump. Such a function gets no trampoline (so no original),
/// and is changed only while no thread is anywhere in it.
/// </summary>
/// <param name="Function">The function, <c>module!name</c>.</param>
/// <param name="Branch">The first such branch, in words (<c>jmp at +0xd to +0x2</c>).</param>
/// <param name="Body">The function's code: no thread may run it or return into it while the jump is written.</param>
internal sealed record BranchIntoEntry(string Function, string Branch, CodeRange Body)
{
    /// <summary>Why the function needs every thread out of it, for messages.</summary>
    public string Why => $"its code branches back into the bytes the jump replaces ({Branch})";

    /// <summary>
    /// The first branch of <paramref name="symbol"/>'s code (read from its file) that is not a call and lands in the
    /// <see cref="EntryPlanner.JumpLength"/> bytes at <paramref name="patchAddress"/> — the entry included: a loop
    /// back to it would enter the new function with the loop's registers, not a call's. Null when there is none.
    /// </summary>
    public static BranchIntoEntry? Find(TargetProcess target, TargetSymbol symbol, ulong patchAddress)
    {
        var body = StackConsistency.OldFunction(target, symbol, patchAddress);
        var length = (int)Math.Min(body.End - symbol.Address, 1 << 20);
        var code = symbol.Module.Elf.ReadLoaded(symbol.Address - symbol.Module.LoadBias, length).ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code), symbol.Address);
        var end = symbol.Address + (ulong)code.Length;
        var jumpEnd = patchAddress + EntryPlanner.JumpLength;
        while (decoder.IP < end)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
                continue; // padding or data between functions: decoding resynchronizes on the next bytes
            if (instruction.FlowControl is not (FlowControl.ConditionalBranch or FlowControl.UnconditionalBranch or FlowControl.XbeginXabortXend)
                || instruction.Op0Kind is not (OpKind.NearBranch16 or OpKind.NearBranch32 or OpKind.NearBranch64))
                continue;
            var target64 = instruction.NearBranchTarget;
            if (target64 >= patchAddress && target64 < jumpEnd)
            {
                var branch = $"{instruction.Mnemonic.ToString().ToLowerInvariant()} at +0x{instruction.IP - symbol.Address:x} to +0x{target64 - symbol.Address:x}";
                return new BranchIntoEntry(symbol.QualifiedName, branch, body);
            }
        }
        return null;
    }

    /// <summary>
    /// The check TextPoker runs inside the stop while jumps are written at functions that branch back into their
    /// entry: it names a thread that runs one of them or has it on its stack (retried until the timeout). Null when
    /// there are none.
    /// </summary>
    public static Func<IReadOnlyList<StoppedThread>, string?>? Guard(TargetProcess target, IReadOnlyList<BranchIntoEntry> functions)
    {
        if (functions.Count == 0)
            return null;
        var unwinder = new StackUnwinder(target, functions.Select(f => f.Body).DistinctBy(r => (r.Start, r.End)));
        return threads => unwinder.FindObstacle(threads) is { } obstacle
            ? $"{obstacle}; {functions.First(f => obstacle.Contains(f.Body.Name, StringComparison.Ordinal)).Why}, so no thread may be in it while the jump is written"
            : null;
    }
}
