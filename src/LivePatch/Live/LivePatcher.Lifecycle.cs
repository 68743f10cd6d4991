using System.Security.Cryptography;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>What loading a payload did: it is linked in the target, checked, nothing redirected.</summary>
/// <param name="Payload">The payload's name.</param>
/// <param name="Functions">The functions it will redirect, with the bytes it expects at each.</param>
/// <param name="Memory">The memory mapped for it.</param>
/// <param name="BuildIds">The build-ids it asked for and what the process has.</param>
public sealed record LoadReport(string Payload, IReadOnlyList<AppliedFunctionInfo> Functions, IReadOnlyList<MappedBlock> Memory, IReadOnlyList<BuildIdCheck> BuildIds);

/// <summary>What replacing every applied payload by a new one did, in one stop.</summary>
/// <param name="Payload">The new payload's name.</param>
/// <param name="Reverted">The payloads reverted, oldest first.</param>
/// <param name="Functions">The new payload's functions.</param>
/// <param name="ThreadsStopped">Threads held in the stop.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
public sealed record ReplaceReport(string Payload, IReadOnlyList<string> Reverted, IReadOnlyList<AppliedFunctionInfo> Functions, int ThreadsStopped, TimeSpan Pause, int Attempts);

/// <summary>What unloading a payload freed.</summary>
/// <param name="Payload">Its name.</param>
/// <param name="Memory">The blocks unmapped.</param>
/// <param name="ThreadsStopped">Threads held while no thread was found in its code.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
public sealed record UnloadReport(string Payload, IReadOnlyList<MappedBlock> Memory, int ThreadsStopped, TimeSpan Pause, int Attempts);

/// <summary>One check made by <see cref="LivePatcher.Check(Payload)"/>.</summary>
/// <param name="Name">What was checked (<c>build-id of app</c>).</param>
/// <param name="Detail">What was found.</param>
public sealed record CheckResult(string Name, string Detail);

public sealed partial class LivePatcher
{
    /// <summary>
    /// Uploads and links the payload at <paramref name="path"/> into the target and makes every check, without
    /// redirecting anything: it is recorded as loaded; <see cref="ApplyLoaded"/> redirects its functions later.
    /// </summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="PatchRefusedException">Refused: name in use, build-id, code changed, denied, too short.</exception>
    public LoadReport Load(string path) => Load(Payload.Load(path));

    /// <inheritdoc cref="Load(string)"/>
    public LoadReport Load(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var state = TargetState.Read(_target);
        RefuseNameInUse(payload.Name, state);
        var loaded = LoadInto(payload, state, fromOriginal: false);
        try
        {
            ThrowIfCancelled();
            TargetState.Write(_session, _target, [.. state, loaded.Info]);
        }
        catch
        {
            FreeAfterFailure(loaded.Blocks);
            throw;
        }
        return new LoadReport(payload.Name, loaded.Info.Functions, loaded.Info.Memory, loaded.Info.BuildIds);
    }

    /// <summary>
    /// Makes every check <see cref="Apply(Payload)"/> makes — the object, its symbols and relocations (linked at
    /// addresses near the old functions, nothing mapped), the build-ids, the bytes at every old function against its
    /// file, the deny list, its dependencies — and writes nothing to the target.
    /// </summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="PatchRefusedException">A check fails; the message names it.</exception>
    public IReadOnlyList<CheckResult> Check(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var state = TargetState.Read(_target);
        var results = new List<CheckResult> { new("payload", $"{payload.Name}: {payload.Functions.Count} function(s), records valid") };
        RefuseNameInUse(payload.Name, state);
        results.Add(new("name", $"no payload named '{payload.Name}' in process {Pid}"));
        var buildIds = CheckBuildIds(payload);
        results.AddRange(buildIds.Select(b => new CheckResult($"build-id of {b.Module}", b.Forced ? $"{b.Actual}, not {b.Expected}: forced" : $"{b.Actual} as expected")));
        var entries = payload.Functions.Select(f => PlanEntry(f, state, fromOriginal: false)).ToList();
        foreach (var entry in entries)
            results.Add(new($"{entry.Symbol.Module.Name}!{entry.Symbol.Name}",
                $"entry 0x{entry.PatchAddress:x} holds {Convert.ToHexStringLower(entry.Original)} ({(entry.StackedOn is { } on ? $"payload '{on}' on top: stacks on it" : "as in its file")}), not denied, {entry.Displaced.Length} bytes displaced"));
        RefuseMissingDependencies(payload.Name, payload.Depends, state);
        results.AddRange(payload.Depends.Select(d => new CheckResult("depends", $"payload '{d}' is applied")));
        // Link where the blocks would go, without mapping them: every symbol must resolve and every relocation reach.
        var layout = PayloadLayout.Compute(payload);
        var near = entries.Min(e => e.PatchAddress) & ~0xfffUL;
        var text = near - 0x100_0000;
        PayloadLinker.Link(payload, layout, text, text - 0x40_0000, text - 0x80_0000, name => ResolveOriginal(payload, entries, text - 0xc0_0000, name) ?? ResolveForPayload(name, entries));
        results.AddRange(CheckOriginals(payload, entries, text - 0xc0_0000));
        results.Add(new("link", $"{layout.Text.Size} bytes of code, {layout.ReadOnly.Size} read-only, {layout.Data.Size} writable: every symbol resolved, every relocation reaches"));
        return results;
    }

    /// <summary>
    /// Redirects the functions of the payload <paramref name="name"/>, loaded (<see cref="Load(Payload)"/>) or
    /// reverted earlier, in one stop. Refused when a payload it depends on is not applied, when a function changed
    /// since it was loaded, or when it was reverted after its writable data changed (Xen's rule: load it again).
    /// </summary>
    /// <exception cref="PatchRefusedException">Refused; the message says why and what to do.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a function, until the timeout.</exception>
    public ApplyReport ApplyLoaded(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var state = TargetState.Read(_target);
        var index = state.FindIndex(p => p.Name == name);
        if (index < 0 || state[index].State == PayloadState.Applied)
            throw new PatchRefusedException(index < 0 ? LivePatchRefusal.NotLoaded : LivePatchRefusal.AlreadyApplied, index < 0
                ? $"process {Pid} has no payload '{name}'{Listing(state)}; load it first (livepatch load)"
                : $"payload '{name}' is already applied to process {Pid} (since {state[index].AppliedAt:u}); revert it first");
        var info = state[index];
        RefuseMissingDependencies(name, info.Depends, state);
        if (info.State == PayloadState.Reverted && info.DataLength > 0 && DataHash(info.DataAddress, info.DataLength) != info.DataHash)
            throw new PatchRefusedException(LivePatchRefusal.ReloadRequired,
                $"payload '{name}' in process {Pid} was reverted after its writable data changed (it ran): applying it again would start from that state; unload it and load it again");
        foreach (var function in info.Functions)
        {
            var now = _target.ReadMemory(function.PatchAddress, JumpLength);
            if (!now.AsSpan().SequenceEqual(Convert.FromHexString(function.OriginalBytes)))
                throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                    $"{function.Name} in process {Pid} holds {Convert.ToHexStringLower(now)} at 0x{function.PatchAddress:x}, not the {function.OriginalBytes} payload '{name}' was loaded against{HolderOf(function.PatchAddress, now, state)}; unload it and load it again");
        }
        var symbols = info.Functions.Select(f => (_target.ResolveSymbol(f.Name), f.PatchAddress)).ToList();
        return PokeApply(info, state, index, symbols);
    }

    /// <summary>
    /// Reverts every applied payload and applies <paramref name="payload"/> inside one stop: no moment where neither
    /// is active. The new payload is planned against the functions' original code (as in their files).
    /// </summary>
    /// <exception cref="PatchRefusedException">Refused: name in use, a dependency, build-id, code changed, denied.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a changed function, until the timeout.</exception>
    public ReplaceReport Replace(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var state = TargetState.Read(_target);
        RefuseNameInUse(payload.Name, state);
        var applied = state.Where(p => p.State == PayloadState.Applied).ToList();
        if (payload.Depends.Count > 0)
            throw new PatchRefusedException(LivePatchRefusal.DependencyMissing,
                $"payload '{payload.Name}' depends on {string.Join(", ", payload.Depends.Select(d => $"'{d}'"))}, which replace reverts: apply it instead");
        var loaded = LoadInto(payload, state, fromOriginal: true);
        var reachable = false;
        try
        {
            // One write per address: the new payload's jump where it has one, the original code elsewhere.
            var sites = new List<PokeSite>();
            var addresses = applied.SelectMany(p => p.Functions).Select(f => f.PatchAddress)
                .Concat(loaded.Info.Functions.Select(f => f.PatchAddress)).Distinct().Order();
            foreach (var address in addresses)
            {
                var current = _target.ReadMemory(address, JumpLength);
                var mine = loaded.Info.Functions.FirstOrDefault(f => f.PatchAddress == address);
                var old = applied.SelectMany(p => p.Functions).FirstOrDefault(f => f.PatchAddress == address);
                var final = mine is not null ? Convert.FromHexString(mine.PatchBytes) : FileBytes(_target.ResolveSymbol(old!.Name).Module, address, JumpLength);
                if (current.AsSpan().SequenceEqual(final))
                    continue;
                var pristine = old is null;
                sites.Add(new PokeSite(address, current, final, pristine && mine is not null ? Convert.FromHexString(mine.DisplacedBytes!).Length : JumpLength,
                    mine?.Name ?? old!.Name, pristine && mine is not null ? MoveThreadFor(mine) : null));
            }
            RunHooksBeforeReplace(applied, loaded.Info);
            ThrowIfCancelled();
            var symbols = loaded.Entries.Select(e => (e.Symbol, e.PatchAddress)).ToList();
            var report = PokeRecorded(sites, StackCheckForReplace(symbols, applied), ReplaceIntent(state, loaded.Info, sites), state);
            reachable = true;
            var now = DateTimeOffset.UtcNow;
            var record = state.Select(p => p.State == PayloadState.Applied ? p with { State = PayloadState.Reverted, RevertedAt = now } : p).ToList();
            record.Add(loaded.Info with { State = PayloadState.Applied, AppliedAt = now, PauseMicroseconds = report.Pause.TotalMicroseconds, Threads = report.Threads });
            RecordOrUndo(record, sites);
            RunHooksAfterReplace(applied, loaded.Info);
            return new ReplaceReport(payload.Name, [.. applied.Select(p => p.Name)], loaded.Info.Functions, report.Threads, report.Pause, report.Attempts);
        }
        catch
        {
            if (!reachable)
                FreeAfterFailure(loaded.Blocks);
            throw;
        }
    }

    /// <summary>
    /// Frees the memory of a loaded or reverted payload and removes it from the record, once no thread runs its code
    /// or has it on its stack (checked with every thread stopped; retried until the timeout).
    /// </summary>
    /// <exception cref="PatchRefusedException">No such payload, or it is applied (revert it first).</exception>
    /// <exception cref="TargetException">A thread kept its code active until the timeout.</exception>
    public UnloadReport Unload(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        var state = TargetState.Read(_target);
        var index = state.FindIndex(p => p.Name == name);
        if (index < 0)
            throw new PatchRefusedException(LivePatchRefusal.NotLoaded, $"process {Pid} has no payload '{name}'{Listing(state)}");
        var info = state[index];
        if (info.State == PayloadState.Applied)
            throw new PatchRefusedException(LivePatchRefusal.StillApplied, $"payload '{name}' is applied to process {Pid}: revert it before unloading it");
        ThrowIfCancelled();
        RecordIntent(state, UnloadIntent(state, index));
        StopReport report;
        try
        {
            report = UnmapWhenUnused(name, info.Memory);
        }
        catch
        {
            // Nothing unmapped (a thread kept its code active, or cancelled): the intent goes; after a partial unmap it stays.
            if (info.Memory.All(b => IsMapped(_target.ReadMemoryMap(), b)))
                DropIntent(state, createdRecord: false);
            throw;
        }
        state.RemoveAt(index);
        TargetState.Write(_session, _target, state);
        Checkpoint("record-written");
        return new UnloadReport(name, info.Memory, report.Threads, report.Pause, report.Attempts);
    }

    /// <summary>Whether an action got as far as writing to the target's code (its memory must then stay).</summary>
    private sealed class PokeProgress
    {
        public bool Poked { get; set; }
    }

    /// <summary>A payload uploaded and linked, not yet recorded: its record-to-be and what planning found.</summary>
    private sealed record LoadedPayload(AppliedPayloadInfo Info, List<PlannedEntry> Entries, Blocks Blocks);

    /// <summary>Checks, allocates, links and writes the payload's code into the target; records nothing.</summary>
    private LoadedPayload LoadInto(Payload payload, List<AppliedPayloadInfo> state, bool fromOriginal)
    {
        var buildIds = CheckBuildIds(payload);
        var entries = payload.Functions.Select(f => PlanEntry(f, state, fromOriginal)).ToList();
        var layout = PayloadLayout.Compute(payload);
        ThrowIfCancelled();
        var blocks = Allocate(layout, entries);
        try
        {
            var linked = PayloadLinker.Link(payload, layout, blocks.Text, blocks.ReadOnly, blocks.Data,
                name => ResolveOriginal(payload, entries, blocks.Trampolines, name) ?? ResolveForPayload(name, entries));
            foreach (var region in new[] { linked.Text, linked.ReadOnly, linked.Data })
                if (region.Bytes.Length > 0)
                    _target.WriteMemory(region.Address, region.Bytes);
            var functions = new List<AppliedFunctionInfo>();
            for (var i = 0; i < entries.Count; i++)
            {
                var entry = entries[i];
                var newAddress = linked.Functions.First(f => ReferenceEquals(f.Function, entry.Function)).Address;
                var jump = new PatchBuffer(entry.PatchAddress, JumpLength);
                jump.WriteJump(newAddress);
                var trampolineAddress = blocks.Trampolines + (ulong)(i * TrampolineSize);
                var trampoline = WriteTrampoline(entry, trampolineAddress);
                RequireOriginal(payload, entry, trampolineAddress, trampoline);
                functions.Add(new AppliedFunctionInfo($"{entry.Symbol.Module.Name}!{entry.Symbol.Name}", entry.Symbol.Address, entry.PatchAddress,
                    entry.Function.NewSymbol, newAddress, Convert.ToHexStringLower(entry.Original), Convert.ToHexStringLower(jump.Bytes))
                {
                    DisplacedBytes = Convert.ToHexStringLower(entry.Displaced),
                    Trampoline = trampoline is null ? 0 : trampolineAddress,
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
                DataHash = data.Length == 0 ? null : Convert.ToHexStringLower(SHA256.HashData(data)),
                Hooks = LinkedHooks(payload, linked),
            };
            return new LoadedPayload(info, entries, blocks);
        }
        catch
        {
            FreeAfterFailure(blocks);
            throw;
        }
    }

    /// <summary>Redirects the functions of <paramref name="info"/> (loaded now or before) in one stop and records it applied.</summary>
    private ApplyReport PokeApply(AppliedPayloadInfo info, List<AppliedPayloadInfo> state, int index, IEnumerable<(TargetSymbol Symbol, ulong PatchAddress)> symbols,
        PokeProgress? progress = null)
    {
        var sites = info.Functions.Select(f => new PokeSite(f.PatchAddress, Convert.FromHexString(f.OriginalBytes), Convert.FromHexString(f.PatchBytes),
            f.DisplacedBytes is null ? JumpLength : Convert.FromHexString(f.DisplacedBytes).Length, f.Name, MoveThreadFor(f))).ToList();
        RunHook(info, PayloadHookKind.PreApply);
        ThrowIfCancelled();
        var report = PokeRecorded(sites, StackCheckForApply(symbols, state), ApplyIntent(info, state, index), state);
        progress?.Poked = true;
        var applied = info with { State = PayloadState.Applied, AppliedAt = DateTimeOffset.UtcNow, RevertedAt = null, PauseMicroseconds = report.Pause.TotalMicroseconds, Threads = report.Threads };
        List<AppliedPayloadInfo> record = [.. state];
        // Applied payloads stay in the order they were applied: the last applied is the top.
        if (index >= 0)
            record.RemoveAt(index);
        record.Add(applied);
        RecordOrUndo(record, sites);
        RunHook(applied, PayloadHookKind.PostApply);
        return new ApplyReport(info.Name, info.Functions, report.Threads, report.Pause, report.Attempts);
    }

    /// <summary>Writes the record after the jumps (clearing the action's intent); if that fails, takes the jumps out again.</summary>
    private void RecordOrUndo(List<AppliedPayloadInfo> record, List<PokeSite> sites)
    {
        try
        {
            TargetState.Write(_session, _target, record);
            Checkpoint("record-written");
        }
        catch
        {
            // No record, no patch: put the old bytes back rather than leave a change nobody can list.
            TextPoker.Poke(_session, _target, [.. sites.Select(s => s with { Expected = s.Replacement, Replacement = s.Expected, GuardLength = JumpLength, MoveThread = null })], _options.Timeout);
            throw;
        }
    }

    // A thread stopped among the displaced instructions finishes them in the trampoline (the mapping is recomputed:
    // relocation is deterministic).
    private static Func<ulong, ulong?>? MoveThreadFor(AppliedFunctionInfo function)
    {
        if (function.Trampoline == 0 || function.DisplacedBytes is null)
            return null;
        var displaced = Convert.FromHexString(function.DisplacedBytes);
        try
        {
            return Relocator.Relocate(displaced, function.PatchAddress, function.Trampoline, function.PatchAddress + (ulong)displaced.Length).MapAddress;
        }
        catch (Exception error) when (error is RelocationException or InvalidInstructionException)
        {
            return null;
        }
    }

    private void RefuseNameInUse(string name, List<AppliedPayloadInfo> state)
    {
        if (state.FirstOrDefault(p => p.Name == name) is not { } existing)
            return;
        throw new PatchRefusedException(existing.State == PayloadState.Applied ? LivePatchRefusal.AlreadyApplied : LivePatchRefusal.NameInUse, existing.State switch
        {
            PayloadState.Applied => $"payload '{name}' is already applied to process {Pid} (since {existing.AppliedAt:u}); revert it first",
            PayloadState.Loaded => $"payload '{name}' is already loaded in process {Pid}: apply it by name, or unload it first",
            _ => $"payload '{name}' was reverted in process {Pid}: apply it again by name, or unload it before loading a new build",
        });
    }

    private void RefuseMissingDependencies(string name, IReadOnlyList<string> depends, List<AppliedPayloadInfo> state)
    {
        foreach (var dependency in depends)
            if (!state.Any(p => p.Name == dependency && p.State == PayloadState.Applied))
                throw new PatchRefusedException(LivePatchRefusal.DependencyMissing,
                    $"payload '{name}' depends on payload '{dependency}', which is not applied to process {Pid}{Listing(state)}");
    }

    private List<BuildIdCheck> CheckBuildIds(Payload payload)
    {
        var checks = new List<BuildIdCheck>();
        foreach (var wanted in payload.TargetBuildIds)
        {
            var modules = _target.ModulesNamed(wanted.Module);
            var actual = modules[0].BuildId?.ToLowerInvariant() ?? "none";
            if (actual != wanted.BuildId && !_options.Force)
                throw new PatchRefusedException(LivePatchRefusal.BuildIdMismatch,
                    $"payload '{payload.Name}' was built for {wanted.Module} with build-id {wanted.BuildId}; process {Pid} runs {modules[0].Path} with build-id {actual} (--force applies it anyway)");
            checks.Add(new BuildIdCheck(wanted.Module, wanted.BuildId, actual, actual != wanted.BuildId));
        }
        return checks;
    }

    private string DataHash(ulong address, int length) => Convert.ToHexStringLower(SHA256.HashData(_target.ReadMemory(address, length)));

    private static string Listing(List<AppliedPayloadInfo> state) =>
        state.Count == 0 ? "" : $"; it has {string.Join(", ", state.Select(p => $"'{p.Name}' ({p.State.ToString().ToLowerInvariant()})"))}";

    // Which applied payload wrote these bytes at the address, if one did, for messages.
    private static string HolderOf(ulong address, byte[] bytes, List<AppliedPayloadInfo> state) =>
        state.LastOrDefault(p => p.State == PayloadState.Applied && p.Functions.Any(f => f.PatchAddress == address && Convert.FromHexString(f.PatchBytes).AsSpan().SequenceEqual(bytes))) is { } holder
            ? $" (payload '{holder.Name}' was applied there since)" : "";

    /// <summary><paramref name="count"/> bytes (fewer at a segment's end) of the module's file at run-time address <paramref name="address"/>.</summary>
    private byte[] FileBytes(TargetModule module, ulong address, int count)
    {
        var fileAddress = address - module.LoadBias;
        foreach (var segment in module.Elf.LoadSegments)
        {
            if (fileAddress < segment.VirtualAddress || fileAddress >= segment.VirtualAddress + segment.FileSize)
                continue;
            var available = (int)Math.Min((ulong)count, segment.VirtualAddress + segment.FileSize - fileAddress);
            return module.Elf.GetSegmentData(segment).Slice((int)(fileAddress - segment.VirtualAddress), available).ToArray();
        }
        throw new PatchRefusedException(LivePatchRefusal.NotAFunction, $"0x{address:x} in process {Pid} is not in the file data of {module.Name}");
    }
}
