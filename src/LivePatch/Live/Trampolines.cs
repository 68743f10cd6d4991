using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// The trampolines of a payload: for each old function, its displaced instructions relocated into a 64-byte slot of a
/// block mapped for the payload, followed by a jump back to the old code after them. A thread stopped among the
/// displaced instructions is moved there to finish them; a payload's <c>LIVEPATCH_ORIGINAL</c> calls them.
/// </summary>
internal static class Trampolines
{
    /// <summary>Room for one entry's displaced instructions relocated (rel8 branches grow, far ones go through slots) and the jump back.</summary>
    public const int Size = 64;

    /// <summary>Entry <paramref name="index"/>'s trampoline in a block at <paramref name="block"/>: known before linking.</summary>
    public static ulong Address(ulong block, int index) => block + (ulong)(index * Size);

    /// <summary>The trampoline of <paramref name="entry"/> at <paramref name="address"/>, or null when it can have none.</summary>
    public static RelocatedCode? For(PlannedEntry entry, ulong address) =>
        entry.LoopsBack is null ? Relocate(entry.Displaced, entry.PatchAddress, address, out _) : null;

    /// <summary>Why <paramref name="entry"/> can have no trampoline at <paramref name="address"/>, or null when it can.</summary>
    public static string? Problem(PlannedEntry entry, ulong address)
    {
        if (entry.LoopsBack is { } loop)
            return $"{loop.Why}: the original would run its body and come back into the jump";
        Relocate(entry.Displaced, entry.PatchAddress, address, out var problem);
        return problem;
    }

    /// <summary>
    /// Where a thread stopped at a RIP among <paramref name="function"/>'s displaced instructions finishes them (the
    /// mapping is recomputed: relocation is deterministic); null when the function has no trampoline.
    /// </summary>
    public static Func<ulong, ulong?>? MoveThreadFor(AppliedFunctionInfo function) =>
        function.Trampoline == 0 || function.DisplacedBytes is null ? null : MoveThreadFor(function.DisplacedBytes, function.PatchAddress, function.Trampoline);

    /// <inheritdoc cref="MoveThreadFor(AppliedFunctionInfo)"/>
    public static Func<ulong, ulong?>? MoveThreadFor(byte[] displaced, ulong patchAddress, ulong trampoline) =>
        Relocate(displaced, patchAddress, trampoline, out _) is { } relocated ? relocated.MapAddress : null;

    /// <summary>
    /// Resolves a symbol the payload declared with <c>LIVEPATCH_ORIGINAL</c> to the trampoline of its function; null for
    /// any other name (it resolves in the target).
    /// </summary>
    public static ulong? ResolveOriginal(Payload payload, IReadOnlyList<PlannedEntry> entries, ulong block, string name)
    {
        if (payload.Originals.FirstOrDefault(o => o.Symbol == name) is not { } original)
            return null;
        var index = entries.ToList().FindIndex(e => ReferenceEquals(e.Function, original.Function));
        return Address(block, index);
    }

    /// <summary>
    /// Refuses a payload with originals in a process that enforces indirect branch tracking: a trampoline does not
    /// start with <c>endbr64</c>, so a payload reaching it through a function pointer would fault (no mainline kernel
    /// enforces it in user space yet; the check keeps a future one from meeting trampolines unprepared).
    /// </summary>
    /// <exception cref="PatchRefusedException">The process enforces it (<see cref="LivePatchRefusal.ControlFlowEnforcement"/>).</exception>
    public static void RequireDirectReach(int pid, Payload payload)
    {
        if (payload.Originals.Count > 0 && ControlFlowEnforcement.FirstThreadWith(pid, CetFeatures.IndirectBranchTracking) is { } thread)
            throw new PatchRefusedException(LivePatchRefusal.ControlFlowEnforcement,
                $"payload '{payload.Name}' calls originals ({string.Join(", ", payload.Originals.Select(o => $"'{o.Symbol}'"))}), but process {pid} enforces indirect branch tracking on thread {thread.Tid} " +
                $"({ControlFlowEnforcement.StatusField} {ControlFlowEnforcement.Describe(thread.Features)}) and trampolines do not start with endbr64; nothing was changed");
    }

    /// <summary>
    /// Refuses the payload when it calls the original of a function whose displaced instructions could not be put in
    /// a trampoline (<paramref name="trampoline"/> is null): its original would not exist.
    /// </summary>
    /// <exception cref="PatchRefusedException">The payload needs that original.</exception>
    public static void RequireOriginal(int pid, Payload payload, PlannedEntry entry, ulong address, RelocatedCode? trampoline)
    {
        if (trampoline is null && payload.Originals.FirstOrDefault(o => ReferenceEquals(o.Function, entry.Function)) is { } original)
            throw OriginalUnavailable(pid, payload, entry, original, Problem(entry, address));
    }

    /// <summary>For a check: each original's trampoline, relocated at a block at <paramref name="block"/> without writing it.</summary>
    /// <exception cref="PatchRefusedException">An original's instructions cannot be moved.</exception>
    public static List<CheckResult> CheckOriginals(int pid, Payload payload, IReadOnlyList<PlannedEntry> entries, ulong block)
    {
        var results = new List<CheckResult>();
        foreach (var original in payload.Originals)
        {
            var index = entries.ToList().FindIndex(e => ReferenceEquals(e.Function, original.Function));
            var entry = entries[index];
            if (Problem(entry, Address(block, index)) is { } problem)
                throw OriginalUnavailable(pid, payload, entry, original, problem);
            results.Add(new CheckResult($"original of {entry.Name}",
                $"'{original.Symbol}' runs its {entry.Displaced.Length} displaced bytes relocated into a trampoline, then jumps back to 0x{entry.PatchAddress + (ulong)entry.Displaced.Length:x}"));
        }
        return results;
    }

    private static RelocatedCode? Relocate(byte[] displaced, ulong patchAddress, ulong address, out string? problem)
    {
        try
        {
            var relocated = Relocator.Relocate(displaced, patchAddress, address, patchAddress + (ulong)displaced.Length);
            problem = relocated.Bytes.Length > Size ? $"relocated they take {relocated.Bytes.Length} bytes, more than a trampoline's {Size}" : null;
            return problem is null ? relocated : null;
        }
        catch (Exception error) when (error is RelocationException or InvalidInstructionException)
        {
            problem = error.Message;
            return null;
        }
    }

    private static PatchRefusedException OriginalUnavailable(int pid, Payload payload, PlannedEntry entry, PayloadOriginal original, string? why) =>
        new(LivePatchRefusal.OriginalUnavailable,
            $"payload '{payload.Name}' calls the original of {entry.Name} ('{original.Symbol}'), but the instructions its jump displaces in process {pid} ({Convert.ToHexStringLower(entry.Displaced)} at 0x{entry.PatchAddress:x}) cannot be moved to a trampoline: {why}");
}
