using System.Diagnostics;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>Settings for a <see cref="LivePatcher"/>.</summary>
public sealed class LivePatchOptions
{
    /// <summary>How long threads may take to stop, and how long to keep retrying while a thread is inside a site (default 30 ms, as Xen).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMilliseconds(30);

    /// <summary>
    /// Cancels an action between its steps and between stop attempts (never inside a stop): the target is left as
    /// it was and <see cref="OperationCanceledException"/> is thrown.
    /// </summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// What must hold before functions are redirected or restored: <see cref="ConsistencyModel.Entry"/> (the default)
    /// or <see cref="ConsistencyModel.Stack"/>, which also waits, until the timeout, for no thread to have the code
    /// that becomes inactive running or on its stack.
    /// </summary>
    public ConsistencyModel Consistency { get; init; }
}

/// <summary>
/// Applies and reverts payloads in one running process. Attaching seizes every thread with ptrace (so no other
/// livepatch or debugger can act meanwhile) without stopping them; each action stops them only for the write.
/// Everything expensive — parsing, resolving, linking, allocating, copying code — happens before that stop.
/// Dispose detaches on every path.
/// </summary>
public sealed partial class LivePatcher : IDisposable
{
    private const int JumpLength = Branch.Rel32Length;

    private readonly TargetProcess _target;
    private readonly PtraceSession _session;
    private readonly LivePatchOptions _options;
    private int _disposed;

    private LivePatcher(TargetProcess target, PtraceSession session, LivePatchOptions options)
    {
        _target = target;
        _session = session;
        _options = options;
    }

    /// <summary>The target's process id.</summary>
    public int Pid => _target.Pid;

    /// <summary>Attaches to process <paramref name="pid"/>.</summary>
    /// <exception cref="TargetException">No such process, no permission, or it is busy (another tracer).</exception>
    public static LivePatcher Attach(int pid, LivePatchOptions? options = null)
    {
        StopWindowCode.EnsureCompiled();
        var target = TargetProcess.Open(pid);
        try
        {
            return new LivePatcher(target, PtraceSession.Attach(pid), options ?? new LivePatchOptions());
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>The payloads recorded in process <paramref name="pid"/>, oldest first; needs no ptrace.</summary>
    public static IReadOnlyList<AppliedPayloadInfo> List(int pid)
    {
        using var target = TargetProcess.Open(pid);
        return TargetState.Read(target);
    }

    /// <summary>The payloads recorded in the target, oldest first.</summary>
    public IReadOnlyList<AppliedPayloadInfo> List() => TargetState.Read(_target);

    /// <summary>Loads the payload object at <paramref name="path"/>, links it into the target and redirects its functions.</summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="SymbolResolutionException">An old function is unknown or ambiguous in the target.</exception>
    /// <exception cref="LivePatchException">Refused: already applied, function too short, already replaced.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a function, until the timeout; or the process went away.</exception>
    public ApplyReport Apply(string path) => Apply(Payload.Load(path));

    /// <summary>Links <paramref name="payload"/> into the target and redirects its functions, in one stop of every thread.</summary>
    public ApplyReport Apply(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var state = TargetState.Read(_target);
        if (state.FirstOrDefault(p => p.Name == payload.Name && p.State == PayloadState.Applied) is { } applied)
            throw new LivePatchException(LivePatchRefusal.AlreadyApplied,
                $"payload '{payload.Name}' is already applied to process {Pid} (since {applied.AppliedAt:u}); revert it first");

        var entries = payload.Functions.Select(f => PlanEntry(f, state)).ToList();
        var layout = PayloadLayout.Compute(payload);
        ThrowIfCancelled();
        var blocks = Allocate(layout, entries);
        var reachable = false;
        try
        {
            var linked = PayloadLinker.Link(payload, layout, blocks.Text, blocks.ReadOnly, blocks.Data, name => ResolveForPayload(name, entries));
            foreach (var region in new[] { linked.Text, linked.ReadOnly, linked.Data })
                if (region.Bytes.Length > 0)
                    _target.WriteMemory(region.Address, region.Bytes);

            var functions = new List<AppliedFunctionInfo>();
            var sites = new List<PokeSite>();
            for (var i = 0; i < entries.Count; i++)
            {
                var entry = entries[i];
                var newAddress = linked.Functions.First(f => ReferenceEquals(f.Function, entry.Function)).Address;
                var jump = new PatchBuffer(entry.PatchAddress, JumpLength);
                jump.WriteJump(newAddress);
                var trampoline = WriteTrampoline(entry, blocks.Trampolines + (ulong)(i * TrampolineSize));
                sites.Add(new PokeSite(entry.PatchAddress, entry.Original, jump.Bytes.ToArray(), entry.GuardLength,
                    $"{entry.Symbol.Module.Name}!{entry.Symbol.Name}", trampoline is null ? null : trampoline.MapAddress));
                functions.Add(new AppliedFunctionInfo($"{entry.Symbol.Module.Name}!{entry.Symbol.Name}", entry.Symbol.Address, entry.PatchAddress,
                    entry.Function.NewSymbol, newAddress, Convert.ToHexStringLower(entry.Original), Convert.ToHexStringLower(jump.Bytes)));
            }

            _options.Cancellation.ThrowIfCancellationRequested();
            var report = TextPoker.Poke(_session, _target, sites, _options.Timeout, null, _options.Cancellation,
                StackCheckForApply(entries.Select(e => (e.Symbol, e.PatchAddress)), state));
            // From here threads may run the new code or sit in a trampoline: its memory must outlive any failure.
            reachable = true;
            var record = new AppliedPayloadInfo(payload.Name, Path.GetFullPath(payload.File), PayloadState.Applied, DateTimeOffset.UtcNow, null,
                report.Pause.TotalMicroseconds, report.Threads, functions, blocks.Mapped);
            try
            {
                TargetState.Write(_session, _target, [.. state, record]);
            }
            catch
            {
                // No record, no patch: put the old bytes back rather than leave a change nobody can list.
                TextPoker.Poke(_session, _target, [.. sites.Select(s => s with { Expected = s.Replacement, Replacement = s.Expected, GuardLength = JumpLength })], _options.Timeout);
                throw;
            }
            return new ApplyReport(payload.Name, functions, report.Threads, report.Pause, report.Attempts);
        }
        catch
        {
            if (!reachable)
                FreeAfterFailure(blocks);
            throw;
        }
    }

    /// <summary>Restores the functions of the applied payload <paramref name="name"/>, in one stop of every thread.</summary>
    /// <exception cref="LivePatchException">No applied payload has that name, or another was applied after it.</exception>
    /// <exception cref="TargetException">Threads did not stop until the timeout, or the process went away.</exception>
    public RevertReport Revert(string name)
    {
        var state = TargetState.Read(_target);
        var index = state.FindLastIndex(p => p.Name == name && p.State == PayloadState.Applied);
        if (index < 0)
            throw new LivePatchException(LivePatchRefusal.NotApplied, state.Any(p => p.Name == name)
                ? $"payload '{name}' is not applied to process {Pid} (it was reverted)"
                : $"process {Pid} has no payload '{name}'{(state.Count == 0 ? "" : $"; it has {string.Join(", ", state.Select(p => $"'{p.Name}' ({p.State.ToString().ToLowerInvariant()})"))}")}");
        var top = state.FindLastIndex(p => p.State == PayloadState.Applied);
        if (top != index)
            throw new LivePatchException(LivePatchRefusal.NotOnTop,
                $"payload '{name}' is not on top in process {Pid}: '{state[top].Name}' was applied after it; revert '{state[top].Name}' first");

        var entry = state[index];
        var sites = entry.Functions.Select(f => new PokeSite(f.PatchAddress, Convert.FromHexString(f.PatchBytes), Convert.FromHexString(f.OriginalBytes), JumpLength, f.Name)).ToList();
        _options.Cancellation.ThrowIfCancellationRequested();
        var report = TextPoker.Poke(_session, _target, sites, _options.Timeout, null, _options.Cancellation, StackCheckForRevert(entry));
        state[index] = entry with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow };
        TargetState.Write(_session, _target, state);
        return new RevertReport(name, entry.Functions, report.Threads, report.Pause, report.Attempts);
    }

    private TargetModule ModuleOrMain(string? module) => module is null ? _target.MainModule : _target.ModulesNamed(module)[0];

    /// <summary>Detaches from every thread of the target.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        try
        {
            _endWatch.Cancel();
            if (_watchingLocks)
                RestoreLocksBeforeDetach();
            _session.Dispose();
        }
        finally
        {
            _target.Dispose();
            _endWatch.Dispose();
        }
    }

    private sealed record PlannedEntry(PayloadFunction Function, TargetSymbol Symbol, ulong PatchAddress, byte[] Original, byte[] Displaced)
    {
        /// <summary>The whole instructions the jump overlaps: no thread may be left strictly inside them.</summary>
        public int GuardLength => Displaced.Length;
    }

    private sealed record Blocks(ulong Text, ulong ReadOnly, ulong Data, ulong Trampolines, IReadOnlyList<MappedBlock> Mapped);

    // Room for one entry's displaced instructions relocated (rel8 branches grow, far ones go through slots) and the jump back.
    private const int TrampolineSize = 64;

    /// <summary>
    /// Copies the instructions the jump displaces, relocated, to <paramref name="address"/>, followed by a jump back to
    /// the old code after them: a thread stopped among them can be moved there and finish the old function. Null when
    /// they cannot be moved (a branch back into them, say): such a thread is waited for instead.
    /// </summary>
    private RelocatedCode? WriteTrampoline(PlannedEntry entry, ulong address)
    {
        try
        {
            var relocated = Relocator.Relocate(entry.Displaced, entry.PatchAddress, address, entry.PatchAddress + (ulong)entry.Displaced.Length);
            if (relocated.Bytes.Length > TrampolineSize)
                return null;
            _target.WriteMemory(address, relocated.Bytes.Span);
            return relocated;
        }
        catch (Exception error) when (error is RelocationException or InvalidInstructionException)
        {
            return null;
        }
    }

    /// <summary>Finds the old function and checks that a 5-byte jump fits at its entry.</summary>
    private PlannedEntry PlanEntry(PayloadFunction function, List<AppliedPayloadInfo> state)
    {
        var spec = function.OldModule is null ? function.OldName : $"{function.OldModule}!{function.OldName}";
        var symbol = _target.ResolveSymbol(spec);
        if (!symbol.IsFunction)
            throw new LivePatchException(LivePatchRefusal.NotAFunction, $"'{spec}' in process {Pid} is not a function ({symbol})");
        var code = ReadAvailable(symbol.Address, 64);
        var limit = symbol.Size == 0 ? code.Length : (int)Math.Min((ulong)code.Length, symbol.Size);
        var offset = InstructionBoundaries.PatchableEntryOffset(code);
        if (symbol.Size != 0 && (ulong)(offset + JumpLength) > symbol.Size)
            throw TooShort(symbol, $"it is {symbol.Size} bytes long");
        CoveredInstructions covered;
        try
        {
            covered = InstructionBoundaries.Cover(code.AsSpan(offset, limit - offset), symbol.Address + (ulong)offset, JumpLength);
        }
        catch (InvalidInstructionException error)
        {
            throw TooShort(symbol, error.Message);
        }
        if (covered.FlowEndOffset is { } end)
            throw TooShort(symbol, $"its code ends after {offset + end} bytes");
        var patchAddress = symbol.Address + (ulong)offset;
        if (state.Where(p => p.State == PayloadState.Applied).SelectMany(p => p.Functions.Select(f => (Payload: p, Function: f)))
                .FirstOrDefault(x => x.Function.PatchAddress == patchAddress) is { Payload: not null } holder)
            throw new LivePatchException(LivePatchRefusal.AlreadyReplaced,
                $"{symbol.Module.Name}!{symbol.Name} in process {Pid} is already replaced by payload '{holder.Payload.Name}'; revert it first");
        return new PlannedEntry(function, symbol, patchAddress, code.AsSpan(offset, JumpLength).ToArray(), code.AsSpan(offset, covered.Length).ToArray());
    }

    private LivePatchException TooShort(TargetSymbol symbol, string why) =>
        new(LivePatchRefusal.FunctionTooShort, $"function {symbol.Module.Name}!{symbol.Name} in process {Pid} is too short for a {JumpLength}-byte jump: {why}");

    // The function may sit at the very end of its mapping: read what is mapped, up to count bytes.
    private byte[] ReadAvailable(ulong address, int count)
    {
        var region = _target.ReadMemoryMap().Find(address);
        return _target.ReadMemory(address, region is { } mapped ? (int)Math.Min((ulong)count, mapped.End - address) : count);
    }

    /// <summary>
    /// Resolves a payload's undefined symbol: first in the modules whose functions it replaces (static symbols
    /// included, as the replaced code saw them), then among global symbols, the main program's first.
    /// </summary>
    private ulong? ResolveForPayload(string name, List<PlannedEntry> entries)
    {
        var patched = entries.Select(e => e.Symbol.Module).Distinct().ToList();
        var local = TargetProcess.Candidates(patched, name);
        if (local.Count == 1)
            return local[0].Address;
        if (local.Count > 1)
            throw new SymbolResolutionException(name, local,
                $"symbol '{name}' used by the payload is ambiguous in process {Pid}: {string.Join(", ", local)}");
        var global = TargetProcess.Candidates(_target.Modules, name).Where(s => s.Binding != Elf.ElfSymbolBinding.Local).ToList();
        if (global.Count == 1)
            return global[0].Address;
        if (global.FirstOrDefault(s => s.Module.IsMainExecutable) is { } fromMain)
            return fromMain.Address;
        if (global.Count > 1)
            throw new SymbolResolutionException(name, global,
                $"symbol '{name}' used by the payload is defined by several libraries in process {Pid}: {string.Join(", ", global)}");
        return null;
    }

    private Blocks Allocate(PayloadLayout layout, List<PlannedEntry> entries)
    {
        var nearStart = entries.Min(e => e.PatchAddress);
        var nearEnd = entries.Max(e => e.PatchAddress) + JumpLength;
        var mapped = new List<MappedBlock>();
        try
        {
            return _session.OnTracer(() =>
            {
                var tid = _session.StopOne(Stopwatch.GetTimestamp() + (long)(Math.Max(_options.Timeout.TotalSeconds, 1) * Stopwatch.Frequency));
                try
                {
                    ulong Map(PayloadRegionSize region, MemoryProtection protection, string use)
                    {
                        if (region.Size == 0)
                            return 0;
                        // Each block must reach the old functions and the blocks mapped before it (stubs reach GOT slots by rel32).
                        var start = Math.Min(nearStart, mapped.Count == 0 ? nearStart : mapped.Min(m => m.Address));
                        var end = Math.Max(nearEnd, mapped.Count == 0 ? nearEnd : mapped.Max(m => m.Address + m.Size));
                        var address = RemoteMemory.MapNear(_session, tid, start, end, region.Size, protection);
                        mapped.Add(new MappedBlock(address, RoundToPage(region.Size), use));
                        return address;
                    }
                    var text = Map(layout.Text, MemoryProtection.Read | MemoryProtection.Execute, "text");
                    var readOnly = Map(layout.ReadOnly, MemoryProtection.Read, "rodata");
                    var data = Map(layout.Data, MemoryProtection.Read | MemoryProtection.Write, "data");
                    var trampolines = Map(new PayloadRegionSize((ulong)(entries.Count * TrampolineSize), 16), MemoryProtection.Read | MemoryProtection.Execute, "trampolines");
                    return new Blocks(text, readOnly, data, trampolines, mapped);
                }
                finally
                {
                    _session.ResumeAll();
                }
            });
        }
        catch
        {
            FreeAfterFailure(new Blocks(0, 0, 0, 0, mapped));
            throw;
        }
    }

    // Cleaning up after a failure must not hide the failure: a target that went away keeps nothing to free.
    private void FreeAfterFailure(Blocks blocks)
    {
        try
        {
            Free(blocks);
        }
        catch (TargetException)
        {
        }
    }

    private void Free(Blocks blocks)
    {
        if (blocks.Mapped.Count == 0)
            return;
        _session.OnTracer(() =>
        {
            var tid = _session.StopOne(Stopwatch.GetTimestamp() + Stopwatch.Frequency);
            try
            {
                foreach (var block in blocks.Mapped)
                    RemoteMemory.Unmap(_session, tid, block.Address, block.Size);
            }
            finally
            {
                _session.ResumeAll();
            }
            return 0;
        });
    }

    private static ulong RoundToPage(ulong size) => (size + 0xfff) & ~0xfffUL;
}
