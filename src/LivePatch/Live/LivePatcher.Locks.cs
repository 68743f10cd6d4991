using System.Globalization;
using LivePatch.Poke;
using LivePatch.Sites;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>What a change of the lock prefixes did.</summary>
/// <param name="Dropped">True when the prefixes are now dropped (uniprocessor code), false when they are all <c>lock</c> again.</param>
/// <param name="Reason">Why this state is safe or was chosen (<c>one thread; its next thread is caught before it runs</c>).</param>
/// <param name="Sites">The lock-prefix sites of every module of the process.</param>
/// <param name="Written">Sites written (the others were already in that state).</param>
/// <param name="ThreadsStopped">Threads held during the write.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Watching">True when the prefixes were dropped for a single thread: the patcher must watch for the
/// next thread (<see cref="LivePatcher.WatchLockPrefixes"/>) and stays attached until then.</param>
public sealed record LockPrefixReport(bool Dropped, string Reason, int Sites, int Written, int ThreadsStopped, TimeSpan Pause, bool Watching);

/// <summary>Why <see cref="LivePatcher.WatchLockPrefixes"/> ended.</summary>
/// <param name="Reason">In words: <c>thread 1234 was created: lock prefixes restored before it ran</c>.</param>
/// <param name="Restore">The restore, when one was made (a new thread, a process sharing memory, or cancellation).</param>
/// <param name="ChildrenRestored">Forked processes (own memory) whose lock prefixes were restored before they ran.</param>
public sealed record LockWatchResult(string Reason, LockPrefixReport? Restore, int ChildrenRestored);

public sealed partial class LivePatcher
{
    private const byte LockPrefix = 0xf0;
    private const byte DroppedLockPrefix = 0x3e; // ds: a harmless prefix in 64-bit mode, as the kernel's UP code

    // Set while lock prefixes are dropped on a process with one thread, whose thread creation we must catch.
    private volatile bool _watchingLocks;

    // Dispose ends a watch running on another thread (it holds the tracer thread until it returns).
    private readonly CancellationTokenSource _endWatch = new();

    /// <summary>
    /// Drops the <c>lock</c> prefix of every <c>LP_LOCK_PREFIX</c> site of every module (the byte becomes the harmless
    /// <c>ds</c> prefix), in one stop, when only one thread can run at a time: every thread of the process is bound
    /// to the same single CPU, or the machine has one CPU online, or the process has a single thread. In the last
    /// case the patcher stays attached with the kernel reporting thread and process creation:
    /// <see cref="WatchLockPrefixes"/> restores the prefixes before a second thread runs, and Dispose restores them.
    /// </summary>
    /// <exception cref="PatchRefusedException">Several threads may run at once (<see cref="LivePatchRefusal.ThreadsOnSeveralCpus"/>), or a site holds something else.</exception>
    public LockPrefixReport DropLockPrefixes()
    {
        RefuseWhileInterrupted();
        var sites = LockSites();
        if (sites.Count == 0)
            return new LockPrefixReport(false, "no lock-prefix sites", 0, 0, 0, TimeSpan.Zero, false);
        var pokes = LockPokes(sites, drop: true);
        var reason = "";
        var watch = false;
        ThrowIfCancelled();
        var report = TextPoker.Poke(_session, _target, pokes, _options.Timeout, threads =>
        {
            // Decided with every thread held: none can be created between the check and the write.
            var single = UniprocessorReason(threads.Select(t => t.Tid).ToList());
            if (single is null)
            {
                throw new PatchRefusedException(LivePatchRefusal.ThreadsOnSeveralCpus,
                    $"process {Pid} has {threads.Count} threads that may run on several CPUs at once; its lock prefixes stay (bind it to one CPU with taskset to run it uniprocessor)");
            }
            reason = single.Value.Reason;
            watch = single.Value.NeedsWatch;
            if (watch)
                _session.SetOptions(PtraceSession.WatchTaskOptions);
        }, _options.Cancellation);
        _watchingLocks = watch;
        return new LockPrefixReport(true, reason, sites.Count, pokes.Count, report.Threads, report.Pause, watch);
    }

    /// <summary>Puts back the <c>lock</c> prefix of every <c>LP_LOCK_PREFIX</c> site of every module, in one stop, and ends any watch.</summary>
    /// <exception cref="PatchRefusedException">A site holds something else.</exception>
    public LockPrefixReport RestoreLockPrefixes()
    {
        var sites = LockSites();
        var pokes = LockPokes(sites, drop: false);
        var report = TextPoker.Poke(_session, _target, pokes, _options.Timeout, _ =>
        {
            if (_watchingLocks)
                _session.SetOptions(0);
        }, CancellationToken.None);
        _watchingLocks = false;
        return new LockPrefixReport(false, "more than one thread may run", sites.Count, pokes.Count, report.Threads, report.Pause, false);
    }

    /// <summary>
    /// After <see cref="DropLockPrefixes"/> on a single thread: lets the process run and waits until it creates a
    /// thread (or a process sharing its memory), then restores the lock prefixes before the new thread runs its
    /// first instruction. A forked process with its own memory gets its prefixes restored before it runs and is
    /// let go; the watch goes on. Ends also when the process runs execve or exits, or on <paramref name="cancellation"/>
    /// (prefixes restored). Blocks the calling thread meanwhile.
    /// </summary>
    public LockWatchResult WatchLockPrefixes(CancellationToken cancellation)
    {
        if (!_watchingLocks)
            throw new InvalidOperationException($"process {Pid}: no lock prefixes were dropped on a single thread; nothing to watch");
        var sites = LockSites().Select(s => s.Address).ToList();
        var children = 0;
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellation, _endWatch.Token);
        while (true)
        {
            var seen = _session.OnTracer(() => _session.WaitForTaskEvent(either.Token));
            switch (seen.Kind)
            {
                case TaskEventKind.NewThread:
                    return new LockWatchResult($"thread {seen.NewId} was created: lock prefixes restored before it ran", RestoreLockPrefixes(), children);
                case TaskEventKind.NewProcess when seen.IsVfork:
                    // Its parent waits until it execs or exits: still one thread on this memory at a time.
                    _session.OnTracer(() => { _session.ReleaseForkedChild(seen.NewId); return 0; });
                    continue;
                case TaskEventKind.NewProcess when !_session.OnTracer(() => _session.SharesMemoryWith(seen.NewId)):
                    _session.OnTracer(() => { _session.ReleaseForkedChild(seen.NewId, child => RestoreIn(child, sites)); return 0; });
                    children++;
                    continue;
                case TaskEventKind.NewProcess:
                    LockPrefixReport? shared = null;
                    _session.OnTracer(() => { _session.ReleaseForkedChild(seen.NewId, _ => shared = RestoreLockPrefixes()); return 0; });
                    return new LockWatchResult($"process {seen.NewId} sharing its memory was created: lock prefixes restored before it ran", shared, children);
                case TaskEventKind.Exec:
                    _session.OnTracer(() => { _session.SetOptions(0); return 0; });
                    _watchingLocks = false;
                    return new LockWatchResult($"process {Pid} ran execve: its new program has its own code", null, children);
                case TaskEventKind.Exited:
                    _watchingLocks = false;
                    return new LockWatchResult($"process {Pid} exited", null, children);
                default:
                    return new LockWatchResult("watch cancelled: lock prefixes restored", RestoreLockPrefixes(), children);
            }
        }
    }

    // Once detached, nobody would catch the next thread: the prefixes go back first (best effort if the process is going away).
    private void RestoreLocksBeforeDetach()
    {
        try
        {
            RestoreLockPrefixes();
        }
        catch (Exception error) when (error is TargetException or TextPokeException or PatchRefusedException or OperationCanceledException)
        {
        }
    }

    private sealed record LockSite(ulong Address, string Description);

    private List<LockSite> LockSites()
    {
        var sites = new List<LockSite>();
        foreach (var module in _target.Modules)
        {
            if (module.Elf.FindSection(SiteTables.LockPrefixTable) is null)
                continue;
            foreach (var site in SiteTables.Read(module.Elf).LockPrefixes)
                sites.Add(new LockSite(site.Address + module.LoadBias, $"the lock prefix at {module.Name}+0x{site.Address:x}"));
        }
        return sites;
    }

    private List<PokeSite> LockPokes(List<LockSite> sites, bool drop)
    {
        var (from, to) = drop ? (LockPrefix, DroppedLockPrefix) : (DroppedLockPrefix, LockPrefix);
        var pokes = new List<PokeSite>();
        foreach (var site in sites)
        {
            var held = _target.ReadMemory(site.Address, 1)[0];
            if (held == to)
                continue;
            if (held != from)
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced,
                    $"{site.Description} in process {Pid} holds 0x{held:x2}, neither lock (0xf0) nor its dropped form (0x3e)");
            pokes.Add(new PokeSite(site.Address, [from], [to], 1, site.Description));
        }
        return pokes;
    }

    // A forked child has its own copy of the code: put its prefixes back before it runs (it may start threads).
    private static void RestoreIn(int child, List<ulong> sites)
    {
        using var memory = new ProcessMemory(child);
        var held = new byte[1];
        foreach (var address in sites)
        {
            if (!memory.TryRead(address, held) || held[0] != DroppedLockPrefix)
                continue;
            memory.Write(address, [LockPrefix]);
            if (!memory.TryRead(address, held) || held[0] != LockPrefix)
                throw new TextPokeException(address, $"process {child}: the lock prefix at 0x{address:x} reads back 0x{held[0]:x2} after writing 0xf0");
        }
    }

    /// <summary>Why only one thread can run at a time, or null; NeedsWatch when that holds only until a thread is created.</summary>
    private (string Reason, bool NeedsWatch)? UniprocessorReason(List<int> threads)
    {
        if (OnlineCpus() == 1)
            return ("the machine has one CPU online", false);
        var bound = threads.Select(tid => AllowedCpus(tid)).Distinct().ToList();
        if (bound.Count == 1 && bound[0] is { } cpu && !cpu.Contains(',', StringComparison.Ordinal) && !cpu.Contains('-', StringComparison.Ordinal))
            return ($"every thread is bound to CPU {cpu}", false);
        if (threads.Count == 1)
            return ("one thread; its next thread is caught before it runs", true);
        return null;
    }

    private string? AllowedCpus(int tid)
    {
        try
        {
            return File.ReadLines($"/proc/{Pid}/task/{tid}/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal))?
                ["Cpus_allowed_list:".Length..].Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static int OnlineCpus()
    {
        try
        {
            var count = 0;
            foreach (var part in File.ReadAllText("/sys/devices/system/cpu/online").Trim().Split(','))
            {
                var range = part.Split('-');
                count += range.Length == 1 ? 1 : int.Parse(range[1], CultureInfo.InvariantCulture) - int.Parse(range[0], CultureInfo.InvariantCulture) + 1;
            }
            return count;
        }
        catch (Exception error) when (error is IOException or FormatException)
        {
            return Environment.ProcessorCount;
        }
    }
}
