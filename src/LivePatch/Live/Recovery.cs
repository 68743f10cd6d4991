using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// Ends an action a livepatch run left unfinished (it died between recording its intent and its final record): every
/// site is read; all new, the action is completed; all old, it is rolled back; a mix is rolled back too. The decision
/// is recorded before anything is written, so a recover killed in turn is finished the same way by the next one.
/// </summary>
internal sealed class Recovery(LiveSession session, PayloadMemory memory)
{
    private int Pid => session.Pid;

    /// <summary>The interrupted action in <paramref name="target"/>'s record with what each of its sites holds now; null when there is none.</summary>
    public static InterruptedAction? Describe(TargetProcess target)
    {
        if (RecordStore.ReadRecord(target).Intent is not { } intent)
            return null;
        var sites = intent.Sites.Select(s => s.Classify(target.ReadMemory(s.Address, s.OldBytes.Length))).ToList();
        var map = target.ReadMemoryMap();
        return new InterruptedAction(intent, ProcStatus.IsTracedBy(target.Pid, intent.Livepatch), sites, intent.Unmaps.Count(b => PayloadMemory.IsMapped(map, b)));
    }

    /// <inheritdoc cref="LivePatcher.Recover"/>
    public RecoverReport Recover()
    {
        var record = RecordStore.ReadRecord(session.Target);
        if (record.Intent is not { } intent)
            return Nothing;
        session.ThrowIfCancelled();
        return intent.Action switch
        {
            PendingActionKind.Unload => RecoverUnload(record, intent),
            PendingActionKind.Load => RecoverLoad(record, intent),
            _ => RecoverCode(record, intent),
        };
    }

    /// <summary>
    /// A payload's memory was being mapped: the blocks the intent names that are still mapped and that no payload of
    /// the record names are freed, after the record no longer names them (a kill in between leaks them, it never
    /// unmaps them twice).
    /// </summary>
    private RecoverReport RecoverLoad(TargetRecord record, PendingAction intent)
    {
        var map = session.Target.ReadMemoryMap();
        var named = record.Payloads.SelectMany(p => p.Memory).ToHashSet();
        var freed = intent.Mapped.Where(b => !named.Contains(b) && PayloadMemory.IsMapped(map, b)).ToList();
        RecordStore.Write(session.Process, record.Payloads);
        session.Checkpoint("record-written");
        if (freed.Count > 0)
            memory.FreeAfterFailure(PayloadBlocks.Of(freed));
        return new RecoverReport(intent, RecoveryOutcome.RolledBack, [], 0, freed, null, 0, TimeSpan.Zero);
    }

    /// <inheritdoc cref="LivePatcher.AbandonInterrupted"/>
    public RecoverReport Abandon()
    {
        var record = RecordStore.ReadRecord(session.Target);
        if (record.Intent is not { } intent)
            return Nothing;
        if (intent.Action == PendingActionKind.Unload)
            return RecoverUnload(record, intent);
        if (intent.Action == PendingActionKind.Load)
            return RecoverLoad(record, intent);
        var states = intent.Sites.Select(s => s.Classify(session.Target.ReadMemory(s.Address, s.OldBytes.Length))).ToList();
        var payloads = record.Payloads;
        string? recordedReverted = null;
        if (intent.Mapped.Count > 0 && intent.After.FirstOrDefault(p => record.Payloads.All(q => q.Name != p.Name)) is { } loaded)
        {
            payloads = [.. payloads, loaded with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow }];
            recordedReverted = loaded.Name;
        }
        RecordStore.Write(session.Process, payloads);
        session.Checkpoint("record-written");
        return new RecoverReport(intent, RecoveryOutcome.Abandoned, states, 0, [], recordedReverted, 0, TimeSpan.Zero);
    }

    private static RecoverReport Nothing => new(null, null, [], 0, [], null, 0, TimeSpan.Zero);

    private RecoverReport RecoverCode(TargetRecord record, PendingAction intent)
    {
        var current = intent.Sites.Select(s => session.Target.ReadMemory(s.Address, s.OldBytes.Length)).ToList();
        var states = intent.Sites.Select((s, i) => s.Classify(current[i])).ToList();
        for (var i = 0; i < states.Count; i++)
            if (states[i] == SiteState.Foreign)
            {
                var site = intent.Sites[i];
                throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                    $"process {Pid}: {site.Function} at 0x{site.Address:x} holds {Convert.ToHexStringLower(current[i])}, neither the old {Convert.ToHexStringLower(site.OldBytes)} nor the new {Convert.ToHexStringLower(site.NewBytes)} of the interrupted {intent.Describe()}: another tool changed it; recover writes nothing (put it right, then livepatch recover --abandon forgets the action)");
            }
        // A mix is rolled back: the record then says what it said before the action, a state the operator knew, and the
        // action can simply be run again.
        var outcome = intent.Recovery ?? (states.All(s => s == SiteState.New) ? RecoveryOutcome.Completed : RecoveryOutcome.RolledBack);
        var mayHaveRun = intent.NewCodeMayHaveRun || states.Any(s => s is SiteState.New or SiteState.Torn);
        var rewrite = Enumerable.Range(0, states.Count)
            .Where(i => states[i] != (outcome == RecoveryOutcome.Completed ? SiteState.New : SiteState.Old)).ToList();
        StopReport? report = null;
        if (rewrite.Count > 0)
        {
            // Decided before anything is written: a recover killed in turn is finished the same way by the next one.
            RecordStore.Write(session.Process, record with { Intent = intent with { Recovery = outcome, NewCodeMayHaveRun = mayHaveRun } });
            session.Checkpoint("recover-decided");
            var sites = rewrite.Select(i => RecoverySite(intent.Sites[i], states[i], current[i], outcome)).ToList();
            report = TextPoker.Poke(session.Process, sites, session.PokeOptions());
            session.Checkpoint("sites-written");
        }

        List<AppliedPayloadInfo> payloads = outcome == RecoveryOutcome.Completed ? [.. intent.After] : record.Payloads;
        string? recordedReverted = null;
        IReadOnlyList<MappedBlock> freed = [];
        if (outcome == RecoveryOutcome.RolledBack && intent.Mapped.Count > 0)
        {
            // The payload loaded for the action is the one the record after it has and the record before it has not.
            var loaded = intent.After.First(p => record.Payloads.All(q => q.Name != p.Name));
            if (mayHaveRun)
            {
                payloads = [.. payloads, loaded with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow }];
                recordedReverted = loaded.Name;
            }
            else
            {
                freed = intent.Mapped;
            }
        }
        else if (outcome == RecoveryOutcome.RolledBack && mayHaveRun && intent.Action == PendingActionKind.Apply
            && payloads.FindIndex(p => p.Name == intent.Payloads[0] && p.State == PayloadState.Loaded) is var index and >= 0)
        {
            // A loaded payload's code ran: as reverted, it is applied again only if its writable data did not change.
            payloads = [.. payloads];
            payloads[index] = payloads[index] with { State = PayloadState.Reverted, AppliedAt = intent.StartedAt, RevertedAt = DateTimeOffset.UtcNow };
            recordedReverted = intent.Payloads[0];
        }
        RecordStore.Write(session.Process, payloads);
        session.Checkpoint("record-written");
        // Freed after the record no longer names them: a kill in between leaks them, it never unmaps them twice.
        if (freed.Count > 0)
            memory.FreeAfterFailure(PayloadBlocks.Of(freed));
        return new RecoverReport(intent, outcome, states, rewrite.Count, freed, recordedReverted, report?.Threads ?? 0, report?.Pause ?? TimeSpan.Zero);
    }

    // The bytes now there (TextPoker checks them again inside the stop) go back to, or on to, the side the outcome
    // wants, guarded by the side being overwritten.
    private static PokeSite RecoverySite(PendingSite site, SiteState state, byte[] current, RecoveryOutcome outcome)
    {
        var toNew = outcome == RecoveryOutcome.Completed;
        var replacement = toNew ? site.NewBytes : site.OldBytes;
        // A torn site may hold either side's instruction boundaries: guard both, move no thread.
        var guard = state == SiteState.Torn ? Math.Max(site.OldGuard, site.NewGuard) : toNew ? site.OldGuard : site.NewGuard;
        var move = state != SiteState.Torn && guard > EntryPlanner.JumpLength && site.Trampoline != 0 && site.DisplacedBytes is { } displaced
            ? Trampolines.MoveThreadFor(displaced, site.Address, site.Trampoline)
            : null;
        return new PokeSite(site.Address, current, replacement, Math.Max(guard, replacement.Length), site.Function, move);
    }

    private RecoverReport RecoverUnload(TargetRecord record, PendingAction intent)
    {
        var map = session.Target.ReadMemoryMap();
        var mapped = intent.Unmaps.Where(b => PayloadMemory.IsMapped(map, b)).ToList();
        if (mapped.Count == intent.Unmaps.Count && intent.Recovery is null)
        {
            RecordStore.Write(session.Process, record.Payloads);
            session.Checkpoint("record-written");
            return new RecoverReport(intent, RecoveryOutcome.RolledBack, [], 0, [], null, 0, TimeSpan.Zero);
        }
        StopReport? report = null;
        if (mapped.Count > 0)
        {
            RecordStore.Write(session.Process, record with { Intent = intent with { Recovery = RecoveryOutcome.Completed } });
            session.Checkpoint("recover-decided");
            report = memory.UnmapWhenUnused(intent.Payloads[0], mapped);
        }
        RecordStore.Write(session.Process, [.. intent.After]);
        session.Checkpoint("record-written");
        return new RecoverReport(intent, RecoveryOutcome.Completed, [], 0, mapped, null, report?.Threads ?? 0, report?.Pause ?? TimeSpan.Zero);
    }
}
