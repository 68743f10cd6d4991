using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// The action a livepatch run left unfinished in process <paramref name="pid"/> (or is doing now), with what each
    /// of its sites holds; null when there is none. Needs no ptrace.
    /// </summary>
    public static InterruptedAction? Interrupted(int pid)
    {
        using var target = TargetProcess.Open(pid);
        return TargetState.ReadRecord(target).Intent is { } intent ? Describe(target, intent) : null;
    }

    /// <summary>
    /// Ends the action a livepatch run left unfinished in the target (it died between recording its intent and its
    /// final record). Every site is read: all new, the action is completed (the record it would have written); all
    /// old, it is rolled back (the record as before, and memory mapped for a payload loaded for it freed); a mix, it
    /// is rolled back too: the new sites are written back to old in one stop, the payload's memory stays and it is
    /// recorded as reverted (its code may have run). An unload is completed once any of its blocks is gone.
    /// A recover that dies in turn is finished by the next one, the same way.
    /// </summary>
    /// <exception cref="PatchRefusedException">A site holds neither its old nor its new bytes (another tool changed it): nothing is written.</exception>
    /// <exception cref="TargetException">Threads did not stop, or one stayed inside a site, until the timeout; or the process went away.</exception>
    public RecoverReport Recover()
    {
        var record = TargetState.ReadRecord(_target);
        if (record.Intent is not { } intent)
            return new RecoverReport(null, null, [], 0, [], null, 0, TimeSpan.Zero);
        ThrowIfCancelled();
        return intent.Action == PendingActionKind.Unload ? RecoverUnload(record, intent) : RecoverSites(record, intent);
    }

    /// <summary>
    /// Forgets the action a livepatch run left unfinished without writing any code: the record says what it said
    /// before, and a payload loaded for the action is recorded as reverted (its memory stays; unload frees it). For
    /// when <see cref="Recover"/> refuses because another tool changed a site, once the operator has put it right.
    /// An unload is recovered as <see cref="Recover"/> does (its blocks may be gone already).
    /// </summary>
    public RecoverReport AbandonInterrupted()
    {
        var record = TargetState.ReadRecord(_target);
        if (record.Intent is not { } intent)
            return new RecoverReport(null, null, [], 0, [], null, 0, TimeSpan.Zero);
        if (intent.Action == PendingActionKind.Unload)
            return RecoverUnload(record, intent);
        var states = intent.Sites.Select(s => s.Classify(_target.ReadMemory(s.Address, s.OldBytes.Length / 2))).ToList();
        var payloads = record.Payloads;
        string? recordedReverted = null;
        if (intent.Mapped.Count > 0 && intent.After.FirstOrDefault(p => record.Payloads.All(q => q.Name != p.Name)) is { } loaded)
        {
            payloads = [.. payloads, loaded with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow }];
            recordedReverted = loaded.Name;
        }
        TargetState.Write(_session, _target, payloads);
        Checkpoint("record-written");
        return new RecoverReport(intent, RecoveryOutcome.Abandoned, states, 0, [], recordedReverted, 0, TimeSpan.Zero);
    }

    private RecoverReport RecoverSites(TargetRecord record, PendingAction intent)
    {
        var current = intent.Sites.Select(s => _target.ReadMemory(s.Address, s.OldBytes.Length / 2)).ToList();
        var states = intent.Sites.Select((s, i) => s.Classify(current[i])).ToList();
        for (var i = 0; i < states.Count; i++)
            if (states[i] == SiteState.Foreign)
            {
                var site = intent.Sites[i];
                throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                    $"process {Pid}: {site.Function} at 0x{site.Address:x} holds {Convert.ToHexStringLower(current[i])}, neither the old {site.OldBytes} nor the new {site.NewBytes} of the interrupted {intent.Describe()}: another tool changed it; recover writes nothing (put it right, then livepatch recover --abandon forgets the action)");
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
            TargetState.Write(_session, _target, record with { Intent = intent with { Recovery = outcome, NewCodeMayHaveRun = mayHaveRun } });
            Checkpoint("recover-decided");
            var sites = rewrite.Select(i => RecoverySite(intent.Sites[i], states[i], current[i], outcome)).ToList();
            report = TextPoker.Poke(_session, _target, sites, _options.Timeout, null, _options.Cancellation, null, n => Checkpoint($"range-{n}-written"));
            Checkpoint("sites-written");
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
        TargetState.Write(_session, _target, payloads);
        Checkpoint("record-written");
        // Freed after the record no longer names them: a kill in between leaks them, it never unmaps them twice.
        if (freed.Count > 0)
            FreeAfterFailure(new Blocks(0, 0, 0, 0, freed));
        return new RecoverReport(intent, outcome, states, rewrite.Count, freed, recordedReverted, report?.Threads ?? 0, report?.Pause ?? TimeSpan.Zero);
    }

    // The bytes now there (TextPoker checks them again inside the stop) go back to, or on to, the side the outcome
    // wants, guarded by the side being overwritten.
    private static PokeSite RecoverySite(PendingSite site, SiteState state, byte[] current, RecoveryOutcome outcome)
    {
        var toNew = outcome == RecoveryOutcome.Completed;
        var replacement = Convert.FromHexString(toNew ? site.NewBytes : site.OldBytes);
        // A torn site may hold either side's instruction boundaries: guard both, move no thread.
        var guard = state == SiteState.Torn ? Math.Max(site.OldGuard, site.NewGuard) : toNew ? site.OldGuard : site.NewGuard;
        var move = state != SiteState.Torn && guard > JumpLength && site.Trampoline != 0 && site.DisplacedBytes is not null
            ? MoveThreadFor(new AppliedFunctionInfo(site.Function, site.Address, site.Address, "", 0, "", "") { DisplacedBytes = site.DisplacedBytes, Trampoline = site.Trampoline })
            : null;
        return new PokeSite(site.Address, current, replacement, Math.Max(guard, replacement.Length), site.Function, move);
    }

    private RecoverReport RecoverUnload(TargetRecord record, PendingAction intent)
    {
        var map = _target.ReadMemoryMap();
        var mapped = intent.Unmaps.Where(b => IsMapped(map, b)).ToList();
        if (mapped.Count == intent.Unmaps.Count && intent.Recovery is null)
        {
            TargetState.Write(_session, _target, record.Payloads);
            Checkpoint("record-written");
            return new RecoverReport(intent, RecoveryOutcome.RolledBack, [], 0, [], null, 0, TimeSpan.Zero);
        }
        StopReport? report = null;
        if (mapped.Count > 0)
        {
            TargetState.Write(_session, _target, record with { Intent = intent with { Recovery = RecoveryOutcome.Completed } });
            Checkpoint("recover-decided");
            report = UnmapWhenUnused(intent.Payloads[0], mapped);
        }
        TargetState.Write(_session, _target, [.. intent.After]);
        Checkpoint("record-written");
        return new RecoverReport(intent, RecoveryOutcome.Completed, [], 0, mapped, null, report?.Threads ?? 0, report?.Pause ?? TimeSpan.Zero);
    }

    /// <summary>Unmaps <paramref name="blocks"/> in one stop once no thread runs their code or has it on its stack (retried until the timeout).</summary>
    private StopReport UnmapWhenUnused(string name, IReadOnlyList<MappedBlock> blocks)
    {
        var ranges = blocks.Where(b => b.Use is "text" or "trampolines")
            .Select(b => new CodeRange(b.Address, b.Address + b.Size, b.Address, $"payload '{name}' ({b.Use})")).ToList();
        var scanner = new StackScanner(_target, ranges);
        var obstacle = "";
        var unmapped = 0;
        return StopTheWorld.Run(_session, _options.Timeout, threads =>
        {
            if (scanner.FindObstacle(threads) is { } found)
            {
                obstacle = found;
                return StopTheWorld.Outcome.Retry;
            }
            foreach (var block in blocks)
            {
                RemoteMemory.Unmap(_session, threads[0].Tid, block.Address, block.Size);
                Checkpoint($"block-{++unmapped}-unmapped");
            }
            return StopTheWorld.Outcome.Done;
        }, () => $"{obstacle}; payload '{name}' stays loaded", _options.Cancellation);
    }

    /// <summary>
    /// Writes the record as it is with <paramref name="intent"/>: from now on a dead livepatch leaves something to
    /// recover. True when this created the record (the process's first action).
    /// </summary>
    private bool RecordIntent(List<AppliedPayloadInfo> before, PendingAction intent)
    {
        var created = !TargetState.Exists(_target);
        TargetState.Write(_session, _target, new TargetRecord(before, intent));
        Checkpoint("intent-recorded");
        return created;
    }

    /// <summary>
    /// After a failure that changed nothing: the record as before, without the intent; or no record at all when this
    /// action created it, so the target keeps the mappings it had. A target that went away keeps nothing.
    /// </summary>
    private void DropIntent(List<AppliedPayloadInfo> before, bool createdRecord)
    {
        try
        {
            if (createdRecord && before.Count == 0)
                TargetState.Remove(_session, _target);
            else
                TargetState.Write(_session, _target, before);
        }
        catch (Exception error) when (error is TargetException or PatchRefusedException)
        {
        }
    }

    /// <summary>
    /// Records <paramref name="intent"/>, then writes <paramref name="sites"/> in one stop; if the stop fails, TextPoker
    /// left every site as it was and the intent is dropped. The caller's final record write clears it.
    /// </summary>
    private StopReport PokeRecorded(IReadOnlyList<PokeSite> sites, Func<IReadOnlyList<StoppedThread>, string?>? findObstacle, PendingAction intent, List<AppliedPayloadInfo> before)
    {
        var created = RecordIntent(before, intent);
        StopReport report;
        try
        {
            report = TextPoker.Poke(_session, _target, sites, _options.Timeout, null, _options.Cancellation, findObstacle, n => Checkpoint($"range-{n}-written"));
        }
        catch (Exception error)
        {
            // A process that went away keeps nothing: do not wait for threads that no longer stop.
            if (error is not TargetException { Error: TargetError.Exited })
                DropIntent(before, created);
            throw;
        }
        Checkpoint("sites-written");
        return report;
    }

    /// <summary>The intent of applying <paramref name="info"/> (at <paramref name="index"/> in the record, or loaded now when -1).</summary>
    private static PendingAction ApplyIntent(AppliedPayloadInfo info, List<AppliedPayloadInfo> state, int index)
    {
        List<AppliedPayloadInfo> after = [.. state];
        if (index >= 0)
            after.RemoveAt(index);
        after.Add(info with { State = PayloadState.Applied, AppliedAt = DateTimeOffset.UtcNow, RevertedAt = null });
        var sites = info.Functions.Select(f => new PendingSite(f.Name, f.PatchAddress, f.OriginalBytes, f.PatchBytes, GuardOf(f), JumpLength)
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
    private static PendingAction RevertIntent(List<AppliedPayloadInfo> state, int index)
    {
        var entry = state[index];
        List<AppliedPayloadInfo> after = [.. state];
        after[index] = entry with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow };
        var sites = entry.Functions.Select(f => new PendingSite(f.Name, f.PatchAddress, f.PatchBytes, f.OriginalBytes, JumpLength, GuardOf(f))
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
    private static PendingAction ReplaceIntent(List<AppliedPayloadInfo> state, AppliedPayloadInfo loaded, IReadOnlyList<PokeSite> sites)
    {
        var now = DateTimeOffset.UtcNow;
        List<AppliedPayloadInfo> after = [.. state.Select(p => p.State == PayloadState.Applied ? p with { State = PayloadState.Reverted, RevertedAt = now } : p)];
        after.Add(loaded with { State = PayloadState.Applied, AppliedAt = now });
        var applied = state.Where(p => p.State == PayloadState.Applied).SelectMany(p => p.Functions).ToList();
        var pending = sites.Select(s =>
        {
            var mine = loaded.Functions.FirstOrDefault(f => f.PatchAddress == s.Address);
            var original = applied.FirstOrDefault(f => f.PatchAddress == s.Address) ?? mine!;
            return new PendingSite(s.Description, s.Address, Convert.ToHexStringLower(s.Expected), Convert.ToHexStringLower(s.Replacement),
                s.GuardLength, mine is not null ? JumpLength : GuardOf(original))
            {
                DisplacedBytes = original.DisplacedBytes,
                Trampoline = original.Trampoline,
            };
        }).ToList();
        return new PendingAction(PendingActionKind.Replace, [loaded.Name], Environment.ProcessId, now, pending, after) { Mapped = loaded.Memory };
    }

    /// <summary>The intent of unloading the payload at <paramref name="index"/>.</summary>
    private static PendingAction UnloadIntent(List<AppliedPayloadInfo> state, int index) =>
        new(PendingActionKind.Unload, [state[index].Name], Environment.ProcessId, DateTimeOffset.UtcNow, [], [.. state.Where((_, i) => i != index)])
        {
            Unmaps = state[index].Memory,
        };

    // The whole original instructions the jump overlaps: no thread may be stopped strictly inside them.
    private static int GuardOf(AppliedFunctionInfo function) =>
        function.DisplacedBytes is null ? JumpLength : Math.Max(JumpLength, function.DisplacedBytes.Length / 2);

    private void Checkpoint(string step) => _options.Checkpoint?.Invoke(step);

    /// <summary>Site actions touch no payload, but nothing is changed while an interrupted action waits for recover.</summary>
    private void RefuseWhileInterrupted() => TargetState.Read(_target);

    private static InterruptedAction Describe(TargetProcess target, PendingAction intent)
    {
        var sites = intent.Sites.Select(s => s.Classify(target.ReadMemory(s.Address, s.OldBytes.Length / 2))).ToList();
        var map = target.ReadMemoryMap();
        return new InterruptedAction(intent, TracedBy(target.Pid, intent.Livepatch), sites, intent.Unmaps.Count(b => IsMapped(map, b)));
    }

    // Every page of the block lies in a mapping (the kernel may merge neighbouring blocks of one protection into one).
    private static bool IsMapped(MemoryMap map, MappedBlock block)
    {
        for (var page = block.Address; page < block.Address + block.Size; page += 4096)
            if (!map.Regions.Any(r => r.Contains(page)))
                return false;
        return true;
    }

    // True while the livepatch run that recorded an intent still traces the target: it is at work, not dead.
    private static bool TracedBy(int pid, int livepatch)
    {
        static int? Field(string path, string name)
        {
            try
            {
                var line = File.ReadLines(path).FirstOrDefault(l => l.StartsWith(name, StringComparison.Ordinal));
                return line is null ? null : int.Parse(line[name.Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException or FormatException)
            {
                return null;
            }
        }
        var tracer = Field($"/proc/{pid}/status", "TracerPid:");
        return tracer is > 0 && Field($"/proc/{tracer}/status", "Tgid:") == livepatch;
    }
}
