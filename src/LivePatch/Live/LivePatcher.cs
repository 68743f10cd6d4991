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
    /// Told each named step an action reaches (<c>intent-recorded</c>, <c>range-1-written</c>, <c>sites-written</c>,
    /// <c>record-written</c>...): livepatch's crash-safety tests make the process kill itself there.
    /// </summary>
    internal Action<string>? Checkpoint { get; init; }

    /// <summary>
    /// What must hold before functions are redirected or restored: <see cref="ConsistencyModel.Entry"/> (the default)
    /// or <see cref="ConsistencyModel.Stack"/>, which also waits, until the timeout, for no thread to have the code
    /// that becomes inactive running or on its stack.
    /// </summary>
    public ConsistencyModel Consistency { get; init; }

    /// <summary>Apply even when a module's build-id differs from the one the payload was built against; the record says so.</summary>
    public bool Force { get; init; }

    /// <summary>Functions never to patch, as <c>name</c> or <c>module!name</c> (besides those livepatch itself makes the target run).</summary>
    public IReadOnlyList<string> Deny { get; init; } = [];

    /// <summary>How long a payload's hook may run in the target before it is abandoned and the action fails (default 1 s).</summary>
    public TimeSpan HookTimeout { get; init; } = TimeSpan.FromSeconds(1);
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
        return TargetState.ReadRecord(target).Payloads;
    }

    /// <summary>The payloads recorded in the target, oldest first.</summary>
    public IReadOnlyList<AppliedPayloadInfo> List() => TargetState.ReadRecord(_target).Payloads;

    /// <summary>Loads the payload object at <paramref name="path"/>, links it into the target and redirects its functions.</summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="SymbolResolutionException">An old function is unknown or ambiguous in the target.</exception>
    /// <exception cref="PatchRefusedException">Refused: already applied, function too short, already replaced.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a function, until the timeout; or the process went away.</exception>
    public ApplyReport Apply(string path) => Apply(Payload.Load(path));

    /// <summary>Links <paramref name="payload"/> into the target and redirects its functions, in one stop of every thread.</summary>
    public ApplyReport Apply(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var state = TargetState.Read(_target);
        RefuseNameInUse(payload.Name, state);
        RefuseMissingDependencies(payload.Name, payload.Depends, state);
        var loaded = LoadInto(payload, state, fromOriginal: false);
        var progress = new PokeProgress();
        try
        {
            return PokeApply(loaded.Info, state, -1, loaded.Entries.Select(e => (e.Symbol, e.PatchAddress)), progress);
        }
        catch
        {
            // Once the jumps were written, threads may run the new code or sit in a trampoline: its memory stays.
            if (!progress.Poked)
                FreeAfterFailure(loaded.Blocks);
            throw;
        }
    }

    /// <summary>Restores the functions of the applied payload <paramref name="name"/>, in one stop of every thread.</summary>
    /// <exception cref="PatchRefusedException">No applied payload has that name, or another was applied after it.</exception>
    /// <exception cref="TargetException">Threads did not stop until the timeout, or the process went away.</exception>
    public RevertReport Revert(string name)
    {
        var state = TargetState.Read(_target);
        var index = state.FindLastIndex(p => p.Name == name && p.State == PayloadState.Applied);
        if (index < 0)
            throw new PatchRefusedException(LivePatchRefusal.NotApplied, state.Any(p => p.Name == name)
                ? $"payload '{name}' is not applied to process {Pid} (it was reverted)"
                : $"process {Pid} has no payload '{name}'{(state.Count == 0 ? "" : $"; it has {string.Join(", ", state.Select(p => $"'{p.Name}' ({p.State.ToString().ToLowerInvariant()})"))}")}");
        var top = state.FindLastIndex(p => p.State == PayloadState.Applied);
        if (top != index)
            throw new PatchRefusedException(LivePatchRefusal.NotOnTop,
                $"payload '{name}' is not on top in process {Pid}: '{state[top].Name}' was applied after it; revert '{state[top].Name}' first");

        var entry = state[index];
        var sites = entry.Functions.Select(f => new PokeSite(f.PatchAddress, Convert.FromHexString(f.PatchBytes), Convert.FromHexString(f.OriginalBytes), JumpLength, f.Name)).ToList();
        RunHook(entry, PayloadHookKind.PreRevert);
        ThrowIfCancelled();
        var report = PokeRecorded(sites, StackCheckForRevert(entry), RevertIntent(state, index), state);
        state[index] = entry with { State = PayloadState.Reverted, RevertedAt = DateTimeOffset.UtcNow };
        TargetState.Write(_session, _target, state);
        Checkpoint("record-written");
        RunHook(entry, PayloadHookKind.PostRevert);
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

    private sealed record PlannedEntry(PayloadFunction Function, TargetSymbol Symbol, ulong PatchAddress, byte[] Original, byte[] Displaced, string? StackedOn)
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

    /// <summary>
    /// Finds the old function and checks that a 5-byte jump fits at its entry, that it is not denied, and that its entry
    /// holds what its file has — or the jump of the applied payload on top, which the new one then stacks on. With
    /// <paramref name="fromOriginal"/> (replace) the entry is planned from the file's bytes, as every payload is reverted.
    /// </summary>
    private PlannedEntry PlanEntry(PayloadFunction function, List<AppliedPayloadInfo> state, bool fromOriginal)
    {
        var spec = function.OldModule is null ? function.OldName : $"{function.OldModule}!{function.OldName}";
        var symbol = _target.ResolveSymbol(spec);
        if (!symbol.IsFunction)
            throw new PatchRefusedException(LivePatchRefusal.NotAFunction, $"'{spec}' in process {Pid} is not a function ({symbol})");
        RefuseDenied(symbol);
        var code = ReadAvailable(symbol.Address, 64);
        var file = FileBytes(symbol.Module, symbol.Address, code.Length);
        var limit = Math.Min(file.Length, symbol.Size == 0 ? code.Length : (int)Math.Min((ulong)code.Length, symbol.Size));
        var offset = InstructionBoundaries.PatchableEntryOffset(file);
        if (symbol.Size != 0 && (ulong)(offset + JumpLength) > symbol.Size)
            throw TooShort(symbol, $"it is {symbol.Size} bytes long");
        CoveredInstructions covered;
        try
        {
            covered = InstructionBoundaries.Cover(file.AsSpan(offset, limit - offset), symbol.Address + (ulong)offset, JumpLength);
        }
        catch (InvalidInstructionException error)
        {
            throw TooShort(symbol, error.Message);
        }
        if (covered.FlowEndOffset is { } end)
            throw TooShort(symbol, $"its code ends after {offset + end} bytes");
        var patchAddress = symbol.Address + (ulong)offset;
        var name = $"{symbol.Module.Name}!{symbol.Name}";
        var entry = code.AsSpan(offset, covered.Length);
        var top = state.LastOrDefault(p => p.State == PayloadState.Applied && p.Functions.Any(f => f.PatchAddress == patchAddress));
        var topJump = top?.Functions.First(f => f.PatchAddress == patchAddress).PatchBytes;
        var stacked = topJump is not null && entry[..JumpLength].SequenceEqual(Convert.FromHexString(topJump));
        if (!stacked && !entry.SequenceEqual(file.AsSpan(offset, covered.Length)))
            throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                $"{name} in process {Pid} holds {Convert.ToHexStringLower(entry)} at its entry 0x{patchAddress:x}, not the {Convert.ToHexStringLower(file.AsSpan(offset, covered.Length))} of its file{(top is null ? "" : $" nor the jump of payload '{top.Name}'")}: another tool changed it; refusing to patch over it");
        if (fromOriginal || !stacked)
            return new PlannedEntry(function, symbol, patchAddress, file.AsSpan(offset, JumpLength).ToArray(), file.AsSpan(offset, covered.Length).ToArray(), null);
        // On top of another payload: the jump is what the new one replaces (and what its original calls).
        return new PlannedEntry(function, symbol, patchAddress, entry[..JumpLength].ToArray(), entry[..JumpLength].ToArray(), top!.Name);
    }

    /// <summary>Functions livepatch itself makes the target run (its system calls), and the user's deny list.</summary>
    private void RefuseDenied(TargetSymbol symbol)
    {
        var name = $"{symbol.Module.Name}!{symbol.Name}";
        if (_options.Deny.Any(d => d == symbol.Name || d == name))
            throw new PatchRefusedException(LivePatchRefusal.Denied, $"{name} in process {Pid} is on the deny list; refusing to patch it");
        var syscall = _session.SyscallInstruction;
        if (syscall >= symbol.Address && syscall < symbol.Address + Math.Max(symbol.Size, 1))
            throw new PatchRefusedException(LivePatchRefusal.Denied,
                $"{name} in process {Pid} holds the system call instruction livepatch makes the target execute (0x{syscall:x}); refusing to patch it");
    }

    private PatchRefusedException TooShort(TargetSymbol symbol, string why) =>
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
    // A busy thread may miss the first stop: try once more before leaving the blocks mapped (they are unreachable).
    private void FreeAfterFailure(Blocks blocks)
    {
        for (var attempt = 0; attempt < 2; attempt++)
        {
            try
            {
                Free(blocks);
                return;
            }
            catch (TargetException error) when (error.Error != TargetError.Exited && attempt == 0)
            {
            }
            catch (TargetException)
            {
                return;
            }
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
