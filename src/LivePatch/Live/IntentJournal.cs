using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// Crash safety of payload actions: before writing code an action records its intent in the target (every site with
/// its old and new bytes, and the record as it will be); the action's final record write clears it. A livepatch run
/// that dies in between leaves the intent for <see cref="Recovery"/>. The intents are built here, from the record.
/// </summary>
internal sealed class IntentJournal(LiveSession session)
{
    /// <summary>
    /// Records <paramref name="intent"/>, then writes <paramref name="sites"/> in one stop; if the stop fails, TextPoker
    /// left every site as it was and the intent is dropped. The caller's final record write clears it.
    /// </summary>
    public StopReport PokeRecorded(IReadOnlyList<PokeSite> sites, Func<IReadOnlyList<StoppedThread>, string?>? findObstacle, PendingAction intent, List<AppliedPayloadInfo> before)
    {
        var created = RecordIntent(before, intent);
        StopReport report;
        try
        {
            report = TextPoker.Poke(session.Process, sites, session.PokeOptions(findObstacle));
        }
        catch (Exception error)
        {
            // A process that went away keeps nothing: do not wait for threads that no longer stop.
            if (error is not TargetException { Error: TargetError.Exited })
                DropIntent(before, created);
            throw;
        }
        session.Checkpoint("sites-written");
        return report;
    }

    /// <summary>Writes the record after the jumps (clearing the action's intent); if that fails, takes the jumps out again.</summary>
    public void RecordOrUndo(List<AppliedPayloadInfo> record, IReadOnlyList<PokeSite> sites)
    {
        try
        {
            RecordStore.Write(session.Process, record);
            session.Checkpoint("record-written");
        }
        catch
        {
            // No record, no patch: put the old bytes back rather than leave a change nobody can list.
            TextPoker.Poke(session.Process, [.. sites.Select(s => s with { Expected = s.Replacement, Replacement = s.Expected, GuardLength = s.Expected.Length, MoveThread = null })],
                new PokeOptions { Timeout = session.Options.Timeout });
            throw;
        }
    }

    /// <summary>
    /// Writes the record as it is with <paramref name="intent"/>: from now on a dead livepatch leaves something to
    /// recover. True when this created the record (the process's first action).
    /// </summary>
    public bool RecordIntent(List<AppliedPayloadInfo> before, PendingAction intent)
    {
        var created = !RecordStore.Exists(session.Target);
        RecordStore.Write(session.Process, new TargetRecord(before, intent));
        session.Checkpoint(intent.Action == PendingActionKind.Load ? "load-recorded" : "intent-recorded");
        return created;
    }

    /// <summary>
    /// After a failure that changed nothing: the record as before, without the intent; or no record at all when this
    /// action created it, so the target keeps the mappings it had. A target that went away keeps nothing.
    /// </summary>
    public void DropIntent(List<AppliedPayloadInfo> before, bool createdRecord)
    {
        try
        {
            if (createdRecord && before.Count == 0)
                RecordStore.Remove(session.Process);
            else
                RecordStore.Write(session.Process, before);
        }
        catch (Exception error) when (error is TargetException or PatchRefusedException)
        {
        }
    }

    /// <summary>
    /// Records that the payload <paramref name="name"/> has <paramref name="mapped"/> mapped so far (a Load intent over
    /// the record <paramref name="before"/>): written after each block is mapped, before anything else happens.
    /// </summary>
    public void RecordMapped(List<AppliedPayloadInfo> before, string name, IReadOnlyList<MappedBlock> mapped)
    {
        RecordStore.Write(session.Process, new TargetRecord(before, Load(name, before, mapped)));
        session.Checkpoint($"block-{mapped.Count}-mapped");
    }

    /// <summary>The intent of mapping <paramref name="name"/>'s memory, <paramref name="mapped"/> so far.</summary>
    public static PendingAction Load(string name, List<AppliedPayloadInfo> before, IReadOnlyList<MappedBlock> mapped) =>
        new(PendingActionKind.Load, [name], Environment.ProcessId, DateTimeOffset.UtcNow, [], [.. before]) { Mapped = mapped };

    /// <summary>The intent of applying <paramref name="info"/> (at <paramref name="index"/> in the record, or loaded now when -1).</summary>
    public static PendingAction Apply(AppliedPayloadInfo info, List<AppliedPayloadInfo> record, int index)
    {
        List<AppliedPayloadInfo> after = [.. record];
        if (index >= 0)
            after.RemoveAt(index);
        after.Add(info with { State = PayloadState.Applied, AppliedAt = DateTimeOffset.UtcNow, RevertedAt = null });
        var sites = info.Functions.Select(f => new PendingSite(f.Name, f.PatchAddress, f.OriginalBytes, f.PatchBytes, f.Guard, EntryPlanner.JumpLength)
        {
            DisplacedBytes = f.DisplacedBytes,
            Trampoline = f.Trampoline,
        }).ToList();
        return new PendingAction(PendingActionKind.Apply, [info.Name], Environment.ProcessId, DateTimeOffset.UtcNow, sites, after)
        {
            Mapped = index < 0 ? info.Memory : [],
        };
    }

    /// <summary>The intent of reverting the payload at <paramref name="index"/>.</summary>
    public static PendingAction Revert(List<AppliedPayloadInfo> record, int index)
    {
        var entry = record[index];
        List<AppliedPayloadInfo> after = [.. record];
        after[index] = entry with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow };
        var sites = entry.Functions.Select(f => new PendingSite(f.Name, f.PatchAddress, f.PatchBytes, f.OriginalBytes, EntryPlanner.JumpLength, f.Guard)
        {
            DisplacedBytes = f.DisplacedBytes,
            Trampoline = f.Trampoline,
        }).ToList();
        return new PendingAction(PendingActionKind.Revert, [entry.Name], Environment.ProcessId, DateTimeOffset.UtcNow, sites, after);
    }

    /// <summary>
    /// The intent of a replace: each site goes from what it holds now to the new payload's jump or the original code.
    /// The original instructions at an address are those the first payload applied there displaced (or the new one's,
    /// when no applied payload has it).
    /// </summary>
    public static PendingAction Replace(List<AppliedPayloadInfo> record, AppliedPayloadInfo loaded, IReadOnlyList<PokeSite> sites)
    {
        var now = DateTimeOffset.UtcNow;
        List<AppliedPayloadInfo> after = [.. record.Select(p => p.State == PayloadState.Applied ? p with { State = PayloadState.Reverted, RevertedAt = now } : p)];
        after.Add(loaded with { State = PayloadState.Applied, AppliedAt = now });
        var applied = record.Where(p => p.State == PayloadState.Applied).SelectMany(p => p.Functions).ToList();
        var pending = sites.Select(s =>
        {
            var mine = loaded.Functions.FirstOrDefault(f => f.PatchAddress == s.Address);
            var original = applied.FirstOrDefault(f => f.PatchAddress == s.Address) ?? mine!;
            return new PendingSite(s.Description, s.Address, s.Expected, s.Replacement, s.GuardLength, mine is not null ? EntryPlanner.JumpLength : original.Guard)
            {
                DisplacedBytes = original.DisplacedBytes,
                Trampoline = original.Trampoline,
            };
        }).ToList();
        return new PendingAction(PendingActionKind.Replace, [loaded.Name], Environment.ProcessId, now, pending, after) { Mapped = loaded.Memory };
    }

    /// <summary>The intent of unloading the payload at <paramref name="index"/>.</summary>
    public static PendingAction Unload(List<AppliedPayloadInfo> record, int index) =>
        new(PendingActionKind.Unload, [record[index].Name], Environment.ProcessId, DateTimeOffset.UtcNow, [], [.. record.Where((_, i) => i != index)])
        {
            Unmaps = record[index].Memory,
        };
}
