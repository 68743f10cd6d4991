using System.Buffers.Binary;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>Settings for a <see cref="SitePatcher"/>.</summary>
public sealed class SitePatcherOptions
{
    /// <summary>How long threads may take to stop, and how long to keep retrying while a thread is inside a site (default 30 ms).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMilliseconds(30);

    /// <summary>Cancels an action before its stop or between stop attempts (never inside a stop); nothing is written then.</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// A check run as each action begins (putting lock prefixes back excepted); throwing refuses it with nothing
    /// written. livepatch uses it to change no site while a payload action waits for <c>livepatch recover</c>.
    /// </summary>
    public Action? BeforeChange { get; init; }

    /// <summary>Tells the tests that an action reached a step (<c>planned</c>: its writes are decided, its stop not begun).</summary>
    internal Action<string>? Checkpoint { get; init; }
}

/// <summary>
/// Applies the build-time sites of a process (<c>native/include/livepatch/sites.h</c>): CPU-feature alternatives,
/// static keys, paravirt-style call sites and lock prefixes. Each action plans its writes first — a pure step over
/// the module's tables, its load bias and the bytes the process holds now (<see cref="SitePlans"/>) — then writes
/// them all in one stop of every thread. Sites already in the wanted state are left alone.
/// </summary>
public sealed class SitePatcher : IDisposable
{
    private readonly AttachedProcess _process;
    private readonly bool _ownsProcess;
    private readonly SitePatcherOptions _options;
    private readonly LockPrefixWatch _locks;

    /// <summary>Works on <paramref name="process"/>, which the caller keeps and disposes (its detach restores dropped lock prefixes).</summary>
    public SitePatcher(AttachedProcess process, SitePatcherOptions? options = null) : this(process, options, ownsProcess: false)
    {
    }

    private SitePatcher(AttachedProcess process, SitePatcherOptions? options, bool ownsProcess)
    {
        ArgumentNullException.ThrowIfNull(process);
        StopWindowCode.EnsureCompiled();
        _process = process;
        _ownsProcess = ownsProcess;
        _options = options ?? new SitePatcherOptions();
        _locks = new LockPrefixWatch(process, _options);
    }

    /// <summary>Attaches to process <paramref name="pid"/>; Dispose detaches.</summary>
    /// <exception cref="TargetException">No such process, no permission, or it is busy (another tracer).</exception>
    public static SitePatcher Attach(int pid, SitePatcherOptions? options = null) => new(AttachedProcess.Attach(pid), options, ownsProcess: true);

    /// <summary>The target's process id.</summary>
    public int Pid => _process.Pid;

    /// <summary>The names of the target's modules that carry build-time site tables (sections named <c>.lp.*</c>), the main program first.</summary>
    public IReadOnlyList<string> ModulesWithSites() =>
        [.. _process.Process.Modules.Where(m => m.Elf.Sections.Any(s => s.Name.StartsWith(".lp.", StringComparison.Ordinal)))
            .OrderBy(m => m.IsMainExecutable ? 0 : 1).Select(m => m.Name).Distinct()];

    /// <summary>
    /// Applies the build-time sites of every module that has them — alternatives for the CPU, call sites by the
    /// backend, lock prefixes dropped when only one thread can run (decided inside the stop) — in <b>one</b> stop of
    /// every thread, neighbouring writes merged. Sites already in their chosen state are left alone.
    /// </summary>
    /// <exception cref="SiteTableException">A module's tables are malformed.</exception>
    /// <exception cref="SiteRefusedException">A site holds something else than its original or its choice.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public SitesReport ApplySites(SitesRequest? request = null)
    {
        return _process.ReportingExit("apply sites", () =>
        {
            _options.BeforeChange?.Invoke();
            request ??= new SitesRequest();
            var cpu = request.Cpu ?? CpuFeatures.Detect();
            var modules = new List<ModuleSitesReport>();
            var pokes = new List<PokeSite>();
            var slots = new List<SlotExpectation>();
            foreach (var name in ModulesWithSites())
            {
                var module = ModuleOrMain(name);
                var (chosen, alternatives) = request.Alternatives ? PlanAlternatives(module, cpu) : (0, []);
                var calls = request.CallSites is { } backend ? PlanCallSites(module, backend) : null;
                pokes.AddRange(alternatives);
                if (calls is not null)
                {
                    pokes.AddRange(calls.Pokes);
                    slots.AddRange(calls.Slots);
                }
                modules.Add(new ModuleSitesReport(module.Name, chosen, alternatives.Count, calls?.Decisions.Count ?? 0,
                    calls?.Decisions.Count(d => d.Changes) ?? 0, calls?.Pokes.Count ?? 0));
            }

            var locks = _locks.Sites();
            var dropping = request.DropLockPrefixes && locks.Count > 0;
            var lockPokes = dropping ? SitePlans.LockPrefixes(Pid, locks, drop: true, _process.ReadMemory) : [];
            if (pokes.Count == 0 && !dropping)
                return new SitesReport(modules, locks.Count, false, locks.Count == 0 ? "no lock-prefix sites" : "kept: not asked to drop them", 0, 0, TimeSpan.Zero, 0, false);
            BeforeWrite();
            var decision = default(UniprocessorReason?);
            var threadCount = 0;
            var report = TextPoker.Poke(_process, pokes, PokeOptions() with
            {
                BeforeWrite = _ => RefuseChangedSlots(slots),
                ConditionalSites = lockPokes,
                // Decided with every thread held, as DropLockPrefixes does: none can be created between the check and the write.
                IncludeConditional = !dropping ? null : threads =>
                {
                    threadCount = threads.Count;
                    decision = _locks.DecideInsideStop(threads);
                    return decision is not null;
                },
            });
            var dropped = dropping && decision is not null;
            if (dropped)
                _locks.Dropped(decision!.Value);
            var lockReason = locks.Count == 0 ? "no lock-prefix sites"
                : !request.DropLockPrefixes ? "kept: not asked to drop them"
                : dropped ? decision!.Value.Reason
                : $"kept: {threadCount} threads may run on several CPUs at once";
            var written = modules.Sum(m => m.AlternativesWritten + m.CallSitesWritten) + (dropped ? lockPokes.Count : 0);
            return new SitesReport(modules, locks.Count, dropped, lockReason, written, written == 0 ? 0 : report.Threads, report.Pause, report.Attempts,
                dropped && decision!.Value.NeedsWatch);
        });
    }

    /// <summary>
    /// Rewrites the <c>LP_ALTERNATIVE</c> sites of a module (the main program when <paramref name="module"/> is null)
    /// whose feature this CPU has (<paramref name="cpu"/>, detected when null): each replacement relocated to its site
    /// (RIP-relative operands and branches keep their targets), padded with NOPs, every site written in one stop. A
    /// site with several replacements (<c>LP_ALTERNATIVE_2</c>) gets the last one whose feature the CPU has.
    /// </summary>
    /// <exception cref="SiteTableException">The module's tables are malformed.</exception>
    /// <exception cref="SiteRefusedException">A site holds neither its original nor its replacement bytes, or a replacement cannot be moved there.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public AlternativesReport ApplyAlternatives(string? module = null, CpuFeatures? cpu = null)
    {
        return _process.ReportingExit("apply alternatives", () =>
        {
            _options.BeforeChange?.Invoke();
            var target = ModuleOrMain(module);
            var (chosen, sites) = PlanAlternatives(target, cpu ?? CpuFeatures.Detect());
            if (sites.Count == 0)
                return new AlternativesReport(target.Name, chosen, 0, 0, TimeSpan.Zero, 0);
            BeforeWrite();
            var report = TextPoker.Poke(_process, sites, PokeOptions());
            return new AlternativesReport(target.Name, chosen, sites.Count, report.Threads, report.Pause, report.Attempts);
        });
    }

    /// <summary>
    /// Switches the static key <paramref name="key"/> of a module (the main program when <paramref name="module"/> is
    /// null) on or off: every <c>LP_STATIC_BRANCH</c> site of the key becomes a <c>jmp</c> to its on path or the 5-byte
    /// NOP again, all in one stop.
    /// </summary>
    /// <exception cref="SiteRefusedException">The module has no site for the key, or a site holds something else.</exception>
    /// <exception cref="TargetException">Threads did not stop until the timeout.</exception>
    public StaticKeyReport SetStaticKey(string key, bool enabled, string? module = null)
    {
        return _process.ReportingExit("a static key switch", () =>
        {
            _options.BeforeChange?.Invoke();
            ArgumentException.ThrowIfNullOrEmpty(key);
            var target = ModuleOrMain(module);
            var keys = SiteTables.Read(target.Elf).StaticKeys;
            var count = keys.Count(k => k.Key == key);
            if (count == 0)
                throw new SiteRefusedException(SiteRefusal.UnknownStaticKey,
                    $"{target.Name} in process {Pid} has no static key '{key}'{(keys.Count == 0 ? "" : $"; its keys: {string.Join(", ", keys.Select(k => k.Key).Distinct())}")}");
            var pokes = SitePlans.StaticKey(Pid, target.Name, key, enabled, keys, target.LoadBias, _process.ReadMemory);
            if (pokes.Count == 0)
                return new StaticKeyReport(key, enabled, count, 0, 0, TimeSpan.Zero, 0);
            BeforeWrite();
            var report = TextPoker.Poke(_process, pokes, PokeOptions());
            return new StaticKeyReport(key, enabled, count, pokes.Count, report.Threads, report.Pause, report.Attempts);
        });
    }

    /// <summary>
    /// Rewrites every call site of a module (the main program when <paramref name="module"/> is null) as
    /// <paramref name="backend"/> decides (<see cref="CallSiteBackend.Default"/> when null) from the function each slot
    /// holds now, all in one stop. Sites the backend leaves unchanged keep their indirect call. Sites are rewritten
    /// only from the indirect call they were built with: after the ops table changed, <see cref="RestoreCallSites"/>
    /// first. Inside the stop the slots are read again: if one changed since the choice, nothing is written.
    /// </summary>
    /// <exception cref="SiteTableException">The module's tables are malformed.</exception>
    /// <exception cref="SiteRefusedException">A site holds neither its indirect call nor the backend's choice, or a slot changed meanwhile.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public CallSitesReport ApplyCallSites(CallSiteBackend? backend = null, string? module = null)
    {
        return _process.ReportingExit("apply call sites", () =>
        {
            _options.BeforeChange?.Invoke();
            var target = ModuleOrMain(module);
            var plan = PlanCallSites(target, backend ?? CallSiteBackend.Default);
            return PokeCallSites(target.Name, plan, () => RefuseChangedSlots(plan.Slots));
        });
    }

    /// <summary>
    /// Puts back the indirect call of every call site of a module (the main program when <paramref name="module"/> is
    /// null) that holds anything else, in one stop: each site then calls whatever its slot holds at the time of the
    /// call again, and <see cref="ApplyCallSites"/> may decide anew.
    /// </summary>
    /// <exception cref="SiteRefusedException">A site holds bytes that are not whole instructions, or a call not ending at the site's end.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public CallSitesReport RestoreCallSites(string? module = null)
    {
        return _process.ReportingExit("restore call sites", () =>
        {
            _options.BeforeChange?.Invoke();
            var target = ModuleOrMain(module);
            var view = new ProcessCallSiteView(_process.Process, target);
            var plan = SitePlans.RestoreCallSites(Pid, target.Name, SiteTables.Read(target.Elf).CallSites, target.LoadBias, view.Original, _process.ReadMemory);
            return PokeCallSites(target.Name, plan, null);
        });
    }

    /// <inheritdoc cref="LockPrefixWatch.Drop"/>
    public LockPrefixReport DropLockPrefixes()
    {
        return _process.ReportingExit("drop lock prefixes", () =>
        {
            _options.BeforeChange?.Invoke();
            BeforeWrite();
            return _locks.Drop();
        });
    }

    /// <inheritdoc cref="LockPrefixWatch.Restore"/>
    public LockPrefixReport RestoreLockPrefixes() => _process.ReportingExit("restore lock prefixes", _locks.Restore);

    /// <inheritdoc cref="LockPrefixWatch.Watch"/>
    public LockWatchResult WatchLockPrefixes(CancellationToken cancellation) => _locks.Watch(cancellation);

    /// <summary>True while lock prefixes are dropped on a single thread and the next thread must be caught (<see cref="WatchLockPrefixes"/>).</summary>
    public bool IsWatchingLockPrefixes => _locks.IsWatching;

    /// <summary>Detaches when this patcher attached (lock prefixes dropped for one thread are put back first).</summary>
    public void Dispose()
    {
        if (_ownsProcess)
            _process.Dispose();
    }

    private PokeOptions PokeOptions() => new() { Timeout = _options.Timeout, Cancellation = _options.Cancellation };

    // Before the stop: a cancellation refuses with nothing written.
    private void BeforeWrite()
    {
        if (_options.Cancellation.IsCancellationRequested)
            throw new OperationCanceledException($"process {Pid}: cancelled before anything was written; nothing was changed", _options.Cancellation);
    }

    private TargetModule ModuleOrMain(string? module) => module is null ? _process.Process.MainModule : _process.Process.ModulesNamed(module)[0];

    /// <summary>The alternatives of <paramref name="target"/> this CPU calls for, and the writes still needed for them.</summary>
    private (int Chosen, List<PokeSite> Sites) PlanAlternatives(TargetModule target, CpuFeatures cpu)
    {
        var chosen = SiteChooser.Choose(target.Elf, cpu).Where(c => c.Kind == SiteKind.Alternative && c.UseReplacement).ToList();
        return (chosen.Count, SitePlans.Alternatives(Pid, target.Name, chosen, target.LoadBias, _process.ReadMemory));
    }

    /// <summary>The backend's decision for every call site of <paramref name="target"/>, the writes still needed, and the slot values they assume.</summary>
    private CallSitesPlan PlanCallSites(TargetModule target, CallSiteBackend backend)
    {
        var decisions = CallSitePlanner.Decide(new ProcessCallSiteView(_process.Process, target), SiteTables.Read(target.Elf).CallSites, backend);
        return SitePlans.CallSites(Pid, target.Name, decisions, target.LoadBias, _process.ReadMemory);
    }

    private CallSitesReport PokeCallSites(string module, CallSitesPlan plan, Action? insideStop)
    {
        var choices = SiteChooser.CallSiteChoices(plan.Decisions).ToList();
        var changing = plan.Decisions.Count(d => d.Changes);
        if (plan.Pokes.Count == 0)
            return new CallSitesReport(module, plan.Decisions.Count, changing, 0, 0, TimeSpan.Zero, 0, choices);
        BeforeWrite();
        _options.Checkpoint?.Invoke("planned");
        var report = TextPoker.Poke(_process, plan.Pokes, PokeOptions() with { BeforeWrite = insideStop is null ? null : _ => insideStop() });
        return new CallSitesReport(module, plan.Decisions.Count, changing, plan.Pokes.Count, report.Threads, report.Pause, report.Attempts, choices);
    }

    /// <summary>Inside the stop: each slot still holds the function its site was decided for (one read for a compact ops table).</summary>
    private void RefuseChangedSlots(List<SlotExpectation> slots)
    {
        if (slots.Count == 0)
            return;
        var start = slots.Min(s => s.Address);
        var span = slots.Max(s => s.Address) + 8 - start;
        var table = span <= 4096 ? _process.ReadMemory(start, (int)span) : null;
        foreach (var (address, value, site) in slots)
        {
            var now = BinaryPrimitives.ReadUInt64LittleEndian(table is null ? _process.ReadMemory(address, 8) : table.AsSpan((int)(address - start), 8));
            if (now != value)
                throw new SiteRefusedException(SiteRefusal.CallSiteSlotChanged,
                    $"the slot of {site} in process {Pid} changed from 0x{value:x} to 0x{now:x} while the call sites were being applied; nothing was written: apply again once the ops table is set");
        }
    }
}
