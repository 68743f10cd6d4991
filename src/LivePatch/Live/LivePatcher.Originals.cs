using LivePatch.X86;

namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// Resolves a symbol the payload declared with <c>LIVEPATCH_ORIGINAL</c> to the trampoline of its function: entry
    /// <c>i</c>'s trampoline is at <paramref name="trampolines"/> + i × <see cref="TrampolineSize"/>, known before
    /// linking. Null for any other name (it resolves in the target).
    /// </summary>
    private static ulong? ResolveOriginal(Payload payload, List<PlannedEntry> entries, ulong trampolines, string name)
    {
        if (payload.Originals.FirstOrDefault(o => o.Symbol == name) is not { } original)
            return null;
        var index = entries.FindIndex(e => ReferenceEquals(e.Function, original.Function));
        return trampolines + (ulong)(index * TrampolineSize);
    }

    /// <summary>
    /// Refuses the payload when it calls the original of a function whose displaced instructions could not be put in
    /// a trampoline (<paramref name="trampoline"/> is null): its original would not exist.
    /// </summary>
    private void RequireOriginal(Payload payload, PlannedEntry entry, ulong address, RelocatedCode? trampoline)
    {
        if (trampoline is null && payload.Originals.FirstOrDefault(o => ReferenceEquals(o.Function, entry.Function)) is { } original)
            throw OriginalUnavailable(payload, entry, original, TrampolineProblem(entry, address));
    }

    /// <summary>For <see cref="Check(Payload)"/>: each original's trampoline, relocated at <paramref name="trampolines"/> without writing it.</summary>
    private List<CheckResult> CheckOriginals(Payload payload, List<PlannedEntry> entries, ulong trampolines)
    {
        var results = new List<CheckResult>();
        foreach (var original in payload.Originals)
        {
            var index = entries.FindIndex(e => ReferenceEquals(e.Function, original.Function));
            var entry = entries[index];
            var address = trampolines + (ulong)(index * TrampolineSize);
            if (TrampolineProblem(entry, address) is { } problem)
                throw OriginalUnavailable(payload, entry, original, problem);
            results.Add(new CheckResult($"original of {entry.Symbol.Module.Name}!{entry.Symbol.Name}",
                $"'{original.Symbol}' runs its {entry.Displaced.Length} displaced bytes relocated into a trampoline, then jumps back to 0x{entry.PatchAddress + (ulong)entry.Displaced.Length:x}"));
        }
        return results;
    }

    /// <summary>Why the displaced instructions cannot be moved to a trampoline at <paramref name="address"/>, or null when they can.</summary>
    private static string? TrampolineProblem(PlannedEntry entry, ulong address)
    {
        try
        {
            var relocated = Relocator.Relocate(entry.Displaced, entry.PatchAddress, address, entry.PatchAddress + (ulong)entry.Displaced.Length);
            return relocated.Bytes.Length > TrampolineSize ? $"relocated they take {relocated.Bytes.Length} bytes, more than a trampoline's {TrampolineSize}" : null;
        }
        catch (Exception error) when (error is RelocationException or InvalidInstructionException)
        {
            return error.Message;
        }
    }

    private PatchRefusedException OriginalUnavailable(Payload payload, PlannedEntry entry, PayloadOriginal original, string? why) =>
        new(LivePatchRefusal.OriginalUnavailable,
            $"payload '{payload.Name}' calls the original of {entry.Symbol.Module.Name}!{entry.Symbol.Name} ('{original.Symbol}'), but the instructions its jump displaces in process {Pid} ({Convert.ToHexStringLower(entry.Displaced)} at 0x{entry.PatchAddress:x}) cannot be moved to a trampoline: {why}");
}
