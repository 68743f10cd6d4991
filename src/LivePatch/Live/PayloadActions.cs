using System.Security.Cryptography;
using LivePatch.Payloads;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// One function per transition of a payload's life (<see cref="PayloadLifecycle"/> says when each is allowed): load,
/// apply, revert, replace, unload, and the dry-run check. Each plans and prepares everything before its one stop.
/// </summary>
internal sealed class PayloadActions(LiveSession session)
{
    private readonly EntryPlanner _entries = new(session);
    private readonly PayloadMemory _memory = new(session);
    private readonly HookRunner _hooks = new(session);
    private readonly IntentJournal _journal = new(session);
    private readonly CloneFinder _clones = new(session);

    private int Pid => session.Pid;

    public PayloadMemory Memory => _memory;

    /// <summary>absent → Loaded: uploaded, linked and recorded; nothing redirected.</summary>
    public LoadReport Load(Payload payload, List<AppliedPayloadInfo> record)
    {
        var loaded = LoadInto(payload, record, fromOriginal: false);
        try
        {
            session.ThrowIfCancelled();
            RecordStore.Write(session.Process, [.. record, loaded.Info]);
        }
        catch
        {
            _memory.FreeAfterFailure(loaded.Blocks);
            _journal.DropIntent(record, loaded.CreatedRecord);
            throw;
        }
        return new LoadReport(payload.Name, loaded.Info.Functions, loaded.Info.Memory, loaded.Info.BuildIds) { Copies = loaded.Copies };
    }

    /// <summary>absent → Applied: loaded from its file and redirected in one stop.</summary>
    public ApplyReport Apply(Payload payload, List<AppliedPayloadInfo> record)
    {
        PayloadLifecycle.RequireDependencies(payload.Name, payload.Depends, record, Pid);
        var loaded = LoadInto(payload, record, fromOriginal: false);
        var poked = false;
        try
        {
            return Redirect(loaded.Info, record, -1, loaded.Entries.Select(e => (e.Symbol, e.PatchAddress)), LoopsBack(loaded.Entries), () => poked = true) with { Copies = loaded.Copies };
        }
        catch
        {
            // Once the jumps were written, threads may run the new code or sit in a trampoline: its memory stays.
            if (!poked)
            {
                _memory.FreeAfterFailure(loaded.Blocks);
                _journal.DropIntent(record, loaded.CreatedRecord);
            }
            throw;
        }
    }

    /// <summary>Loaded or Reverted → Applied: its functions redirected again, if nothing changed since it was loaded.</summary>
    public ApplyReport ApplyLoaded(List<AppliedPayloadInfo> record, int index)
    {
        var info = record[index];
        PayloadLifecycle.RequireDependencies(info.Name, info.Depends, record, Pid);
        _hooks.RequireCallable(info.Name, info.Hooks.Select(h => h.Kind));
        if (info.State == PayloadState.Reverted && info.DataLength > 0 && !DataHash(info.DataAddress, info.DataLength).AsSpan().SequenceEqual(info.DataHash))
            throw new PatchRefusedException(LivePatchRefusal.ReloadRequired,
                $"payload '{info.Name}' in process {Pid} was reverted after its writable data changed (it ran): applying it again would start from that state; unload it and load it again");
        foreach (var function in info.Functions)
        {
            var now = session.Target.ReadMemory(function.PatchAddress, EntryPlanner.JumpLength);
            if (!now.AsSpan().SequenceEqual(function.OriginalBytes))
                throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                    $"{function.Name} in process {Pid} holds {Convert.ToHexStringLower(now)} at 0x{function.PatchAddress:x}, not the {Convert.ToHexStringLower(function.OriginalBytes)} payload '{info.Name}' was loaded against{HolderOf(function.PatchAddress, now, record)}; unload it and load it again");
        }
        var symbols = info.Functions.Select(f => (Symbol: IfuncPlanner.SymbolOf(session.Target, f), f.PatchAddress)).ToList();
        var copies = _clones.Require(info.Name, [.. symbols.Select(s => s.Symbol)]);
        var loopsBack = symbols.Select(s => BranchIntoEntry.Find(session.Target, s.Symbol, s.PatchAddress)).OfType<BranchIntoEntry>().ToList();
        return Redirect(info, record, index, symbols.Select(s => (s.Symbol, s.PatchAddress)), loopsBack) with { Copies = copies };
    }

    /// <summary>Applied → Reverted: its functions restored in one stop.</summary>
    public RevertReport Revert(List<AppliedPayloadInfo> record, int index)
    {
        var entry = record[index];
        _hooks.RequireCallable(entry.Name, entry.Hooks.Select(h => h.Kind));
        var sites = entry.Functions.Select(f => new PokeSite(f.PatchAddress, f.PatchBytes, f.OriginalBytes, EntryPlanner.JumpLength, f.Name)).ToList();
        _hooks.Run(entry, PayloadHookKind.PreRevert);
        session.ThrowIfCancelled();
        var report = _journal.PokeRecorded(sites, StackConsistency.CheckForRevert(session, entry), IntentJournal.Revert(record, index), record);
        record[index] = entry with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow };
        RecordStore.Write(session.Process, record);
        session.Checkpoint("record-written");
        _hooks.Run(entry, PayloadHookKind.PostRevert);
        return new RevertReport(entry.Name, entry.Functions, report.Threads, report.Pause, report.Attempts);
    }

    /// <summary>Every Applied → Reverted and the new payload absent → Applied, in one stop: no moment where neither is active.</summary>
    public ReplaceReport Replace(Payload payload, List<AppliedPayloadInfo> record)
    {
        var applied = record.Where(p => p.State == PayloadState.Applied).ToList();
        if (payload.Depends.Count > 0)
            throw new PatchRefusedException(LivePatchRefusal.DependencyMissing,
                $"payload '{payload.Name}' depends on {string.Join(", ", payload.Depends.Select(d => $"'{d}'"))}, which replace reverts: apply it instead");
        foreach (var reverted in applied)
            _hooks.RequireCallable(reverted.Name, reverted.Hooks.Select(h => h.Kind));
        var loaded = LoadInto(payload, record, fromOriginal: true);
        var reachable = false;
        try
        {
            // One write per address: the new payload's jump where it has one, the original code elsewhere.
            var sites = new List<PokeSite>();
            var addresses = applied.SelectMany(p => p.Functions).Select(f => f.PatchAddress)
                .Concat(loaded.Info.Functions.Select(f => f.PatchAddress)).Distinct().Order();
            foreach (var address in addresses)
            {
                var current = session.Target.ReadMemory(address, EntryPlanner.JumpLength);
                var mine = loaded.Info.Functions.FirstOrDefault(f => f.PatchAddress == address);
                var old = applied.SelectMany(p => p.Functions).FirstOrDefault(f => f.PatchAddress == address);
                var final = mine is not null ? mine.PatchBytes : FileBytes(old!, address);
                if (current.AsSpan().SequenceEqual(final))
                    continue;
                var pristine = old is null;
                sites.Add(new PokeSite(address, current, final, pristine && mine is not null ? mine.Guard : EntryPlanner.JumpLength,
                    mine?.Name ?? old!.Name, pristine && mine is not null ? Trampolines.MoveThreadFor(mine) : null));
            }
            _hooks.BeforeReplace(applied, loaded.Info);
            session.ThrowIfCancelled();
            var symbols = loaded.Entries.Select(e => (e.Symbol, e.PatchAddress)).ToList();
            var obstacles = EitherObstacle(StackConsistency.CheckForReplace(session, symbols, applied), BranchIntoEntry.Guard(session.Target, LoopsBack(loaded.Entries)));
            var report = _journal.PokeRecorded(sites, obstacles, IntentJournal.Replace(record, loaded.Info, sites), record);
            reachable = true;
            var now = DateTimeOffset.UtcNow;
            var after = record.Select(p => p.State == PayloadState.Applied ? p with { State = PayloadState.Reverted, RevertedAt = now } : p).ToList();
            after.Add(loaded.Info with { State = PayloadState.Applied, AppliedAt = now, PauseMicroseconds = report.Pause.TotalMicroseconds, Threads = report.Threads });
            _journal.RecordOrUndo(after, sites);
            _hooks.AfterReplace(applied, loaded.Info);
            return new ReplaceReport(payload.Name, [.. applied.Select(p => p.Name)], loaded.Info.Functions, report.Threads, report.Pause, report.Attempts) { Copies = loaded.Copies };
        }
        catch
        {
            if (!reachable)
            {
                _memory.FreeAfterFailure(loaded.Blocks);
                _journal.DropIntent(record, loaded.CreatedRecord);
            }
            throw;
        }
    }

    /// <summary>Loaded or Reverted → absent: its memory unmapped once no thread runs it or has it on its stack.</summary>
    public UnloadReport Unload(List<AppliedPayloadInfo> record, int index)
    {
        var info = record[index];
        session.ThrowIfCancelled();
        _journal.RecordIntent(record, IntentJournal.Unload(record, index));
        StopReport report;
        try
        {
            report = _memory.UnmapWhenUnused(info.Name, info.Memory);
        }
        catch
        {
            // Nothing unmapped (a thread kept its code active, or cancelled): the intent goes; after a partial unmap it stays.
            if (info.Memory.All(b => PayloadMemory.IsMapped(session.Target.ReadMemoryMap(), b)))
                _journal.DropIntent(record, createdRecord: false);
            throw;
        }
        record.RemoveAt(index);
        RecordStore.Write(session.Process, record);
        session.Checkpoint("record-written");
        return new UnloadReport(info.Name, info.Memory, report.Threads, report.Pause, report.Attempts);
    }

    /// <summary>Every check <see cref="Apply"/> makes, linking at addresses near the old functions without mapping anything; nothing is written.</summary>
    public IReadOnlyList<CheckResult> Check(Payload payload, List<AppliedPayloadInfo> record)
    {
        var results = new List<CheckResult>
        {
            new("payload", $"{payload.Name}: {payload.Functions.Count} function(s), records valid"),
            new("name", $"no payload named '{payload.Name}' in process {Pid}"),
        };
        var buildIds = _entries.CheckBuildIds(payload);
        _hooks.RequireCallable(payload.Name, payload.Hooks.Select(h => h.Kind));
        Trampolines.RequireDirectReach(Pid, payload);
        results.Add(new("control-flow enforcement", ControlFlowEnforcement.FirstThreadWith(Pid, ~CetFeatures.None) is { } cet
            ? $"thread {cet.Tid} enforces {ControlFlowEnforcement.Describe(cet.Features)}: the payload has no hook{(cet.Features.HasFlag(CetFeatures.IndirectBranchTracking) ? " and no original" : "")}, and its jumps and thunks keep the shadow stack"
            : "no thread enforces CET (shadow stack, indirect branch tracking)"));
        results.AddRange(buildIds.Select(b => new CheckResult($"build-id of {b.Module}", b.Forced ? $"{b.Actual}, not {b.Expected}: forced" : $"{b.Actual} as expected")));
        var entries = payload.Functions.Select(f => _entries.Plan(f, record, fromOriginal: false)).ToList();
        foreach (var entry in entries)
            results.Add(new(entry.Name,
                $"entry 0x{entry.PatchAddress:x} holds {Convert.ToHexStringLower(entry.Original)} ({(entry.StackedOn is { } on ? $"payload '{on}' on top: stacks on it" : "as in its file")}), not denied, {entry.Displaced.Length} bytes displaced{entry.Ifunc?.EntryNote}" +
                (entry.LoopsBack is { } loop ? $"; {loop.Why}: no trampoline, and the jump is written only while no thread runs it or has it on its stack" : "")));
        results.AddRange(_clones.Check(payload.Name, [.. entries.Select(e => e.Symbol)]));
        PayloadLifecycle.RequireDependencies(payload.Name, payload.Depends, record, Pid);
        results.AddRange(payload.Depends.Select(d => new CheckResult("depends", $"payload '{d}' is applied")));
        // Link where apply would map the blocks now, without mapping them: every symbol must resolve and every
        // relocation reach from there, as it must for apply.
        var layout = PayloadLayout.Compute(payload);
        var blocks = _memory.Plan(layout, entries);
        var ifuncs = new List<IfuncUse>();
        var linked = PayloadLinker.Link(payload, layout, blocks.Text, blocks.ReadOnly, blocks.Data,
            name => Trampolines.ResolveOriginal(payload, entries, blocks.Trampolines, name) ?? _entries.ResolveForPayload(name, entries, ifuncs.Add));
        results.AddRange(Trampolines.CheckOriginals(Pid, payload, entries, blocks.Trampolines));
        results.AddRange(ifuncs.Select(u => u.LinkCheck(Pid)));
        var thunks = new Thunks(session);
        foreach (var entry in entries)
        {
            var keep = thunks.AtRisk(entry, linked, linked.Functions.First(f => ReferenceEquals(f.Function, entry.Function)).Address);
            results.Add(new($"{entry.Name} registers", keep.IsEmpty
                ? "the new code writes no call-clobbered register the old one left alone: the jump goes straight to it"
                : $"the new code may write {keep}, which the old one never wrote and callers may keep values in: the jump goes through a thunk keeping them"));
        }
        results.Add(new("link", $"{layout.Text.Size} bytes of code, {layout.ReadOnly.Size} read-only, {layout.Data.Size} writable, placed as apply would place them now " +
            $"({string.Join(", ", blocks.Mapped.Select(b => $"{b.Use} at 0x{b.Address:x}"))}): every symbol resolved, every relocation reaches"));
        return results;
    }

    /// <summary>A payload uploaded and linked, not yet recorded: its record-to-be and what planning found.</summary>
    private sealed record LoadedPayload(AppliedPayloadInfo Info, List<PlannedEntry> Entries, PayloadBlocks Blocks, IReadOnlyList<FunctionCopy> Copies, bool CreatedRecord);

    /// <summary>Checks, allocates, links and writes the payload's code into the target; records nothing.</summary>
    private LoadedPayload LoadInto(Payload payload, List<AppliedPayloadInfo> record, bool fromOriginal)
    {
        var buildIds = _entries.CheckBuildIds(payload);
        _hooks.RequireCallable(payload.Name, payload.Hooks.Select(h => h.Kind));
        Trampolines.RequireDirectReach(Pid, payload);
        var entries = payload.Functions.Select(f => _entries.Plan(f, record, fromOriginal)).ToList();
        var copies = _clones.Require(payload.Name, [.. entries.Select(e => e.Symbol)]);
        var layout = PayloadLayout.Compute(payload);
        session.ThrowIfCancelled();
        // Each block is recorded as soon as it is mapped: a livepatch killed from here on leaves blocks recover frees.
        var createdRecord = _journal.RecordIntent(record, IntentJournal.Load(payload.Name, record, []));
        PayloadBlocks blocks;
        try
        {
            blocks = _memory.Allocate(layout, entries, mapped => _journal.RecordMapped(record, payload.Name, mapped));
        }
        catch (Exception error)
        {
            if (error is not TargetException { Error: TargetError.Exited })
                _journal.DropIntent(record, createdRecord);
            throw;
        }
        try
        {
            var linked = PayloadLinker.Link(payload, layout, blocks.Text, blocks.ReadOnly, blocks.Data,
                name => Trampolines.ResolveOriginal(payload, entries, blocks.Trampolines, name) ?? _entries.ResolveForPayload(name, entries));
            foreach (var region in new[] { linked.Text, linked.ReadOnly, linked.Data })
                if (region.Bytes.Length > 0)
                    session.Target.WriteMemory(region.Address, region.Bytes);
            var functions = new List<AppliedFunctionInfo>();
            var thunks = new Thunks(session);
            for (var i = 0; i < entries.Count; i++)
            {
                var entry = entries[i];
                var newAddress = linked.Functions.First(f => ReferenceEquals(f.Function, entry.Function)).Address;
                var keep = thunks.AtRisk(entry, linked, newAddress);
                var thunkAddress = keep.IsEmpty ? 0 : Thunks.Address(blocks.Trampolines, entries.Count, i);
                if (thunkAddress != 0)
                    session.Target.WriteMemory(thunkAddress, Thunks.Assemble(thunkAddress, newAddress, keep));
                var jump = new PatchBuffer(entry.PatchAddress, EntryPlanner.JumpLength);
                jump.WriteJump(thunkAddress != 0 ? thunkAddress : newAddress);
                var trampolineAddress = Trampolines.Address(blocks.Trampolines, i);
                var trampoline = Trampolines.For(entry, trampolineAddress);
                if (trampoline is not null)
                    session.Target.WriteMemory(trampolineAddress, trampoline.Bytes.Span);
                Trampolines.RequireOriginal(Pid, payload, entry, trampolineAddress, trampoline);
                functions.Add(new AppliedFunctionInfo(entry.Name, entry.Symbol.Address, entry.PatchAddress, entry.Function.NewSymbol, newAddress, entry.Original, jump.Bytes.ToArray())
                {
                    DisplacedBytes = entry.Displaced,
                    Trampoline = trampoline is null ? 0 : trampolineAddress,
                    Thunk = thunkAddress,
                    Keeps = keep.IsEmpty ? null : keep.ToString(),
                    Ifunc = entry.Ifunc?.IfuncName,
                });
            }
            var data = linked.Data.Bytes;
            var info = new AppliedPayloadInfo(payload.Name, Path.GetFullPath(payload.File), PayloadState.Loaded, null, null, 0, 0, functions, blocks.Mapped)
            {
                LoadedAt = DateTimeOffset.UtcNow,
                Depends = payload.Depends,
                BuildIds = buildIds,
                DataAddress = linked.Data.Address,
                DataLength = data.Length,
                DataHash = data.Length == 0 ? null : SHA256.HashData(data),
                Hooks = HookRunner.Linked(payload, linked),
            };
            return new LoadedPayload(info, entries, blocks, copies, createdRecord);
        }
        catch
        {
            _memory.FreeAfterFailure(blocks);
            _journal.DropIntent(record, createdRecord);
            throw;
        }
    }

    /// <summary>Redirects the functions of <paramref name="info"/> (loaded now or before) in one stop and records it applied.</summary>
    private ApplyReport Redirect(AppliedPayloadInfo info, List<AppliedPayloadInfo> record, int index, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> symbols,
        IReadOnlyList<BranchIntoEntry> loopsBack, Action? poked = null)
    {
        var sites = info.Functions.Select(f => new PokeSite(f.PatchAddress, f.OriginalBytes, f.PatchBytes, f.Guard, f.Name, Trampolines.MoveThreadFor(f))).ToList();
        _hooks.Run(info, PayloadHookKind.PreApply);
        session.ThrowIfCancelled();
        var obstacles = EitherObstacle(StackConsistency.CheckForApply(session, symbols, record), BranchIntoEntry.Guard(session.Target, loopsBack));
        var report = _journal.PokeRecorded(sites, obstacles, IntentJournal.Apply(info, record, index), record);
        poked?.Invoke();
        var applied = info with { State = PayloadState.Applied, AppliedAt = DateTimeOffset.UtcNow, RevertedAt = null, PauseMicroseconds = report.Pause.TotalMicroseconds, Threads = report.Threads };
        List<AppliedPayloadInfo> after = [.. record];
        // Applied payloads stay in the order they were applied: the last applied is the top.
        if (index >= 0)
            after.RemoveAt(index);
        after.Add(applied);
        _journal.RecordOrUndo(after, sites);
        _hooks.Run(applied, PayloadHookKind.PostApply);
        return new ApplyReport(info.Name, info.Functions, report.Threads, report.Pause, report.Attempts);
    }

    private static List<BranchIntoEntry> LoopsBack(IEnumerable<PlannedEntry> entries) => [.. entries.Select(e => e.LoopsBack).OfType<BranchIntoEntry>()];

    // Both checks inside the stop: the first obstacle either finds.
    private static Func<IReadOnlyList<StoppedThread>, string?>? EitherObstacle(Func<IReadOnlyList<StoppedThread>, string?>? first, Func<IReadOnlyList<StoppedThread>, string?>? second) =>
        first is null ? second : second is null ? first : threads => first(threads) ?? second(threads);

    // The original code at an applied function's entry, from its module's file.
    private byte[] FileBytes(AppliedFunctionInfo function, ulong address)
    {
        var module = IfuncPlanner.SymbolOf(session.Target, function).Module;
        var bytes = module.Elf.ReadLoaded(address - module.LoadBias, EntryPlanner.JumpLength);
        return bytes.Length == EntryPlanner.JumpLength ? bytes.ToArray()
            : throw new PatchRefusedException(LivePatchRefusal.NotAFunction, $"0x{address:x} in process {Pid} is not in the file data of {module.Name}");
    }

    private byte[] DataHash(ulong address, int length) => SHA256.HashData(session.Target.ReadMemory(address, length));

    // Which applied payload wrote these bytes at the address, if one did, for messages.
    private static string HolderOf(ulong address, byte[] bytes, List<AppliedPayloadInfo> record) =>
        record.LastOrDefault(p => p.State == PayloadState.Applied && p.Functions.Any(f => f.PatchAddress == address && f.PatchBytes.AsSpan().SequenceEqual(bytes))) is { } holder
            ? $" (payload '{holder.Name}' was applied there since)" : "";
}
