using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Sites;

/// <summary>Why only one thread of a process can run at a time; <see cref="NeedsWatch"/> when that holds only until it creates a thread.</summary>
internal readonly record struct UniprocessorReason(string Reason, bool NeedsWatch);

/// <summary>
/// The lock prefixes of a process (the kernel's <c>alternatives_smp_unlock</c>/<c>_lock</c>): dropped while only one
/// thread can run — every thread bound to one CPU, one CPU online, or a single thread, which is then watched so that
/// the prefixes are back before a second thread runs its first instruction — and restored otherwise.
/// </summary>
internal sealed class LockPrefixWatch(AttachedProcess process, SitePatcherOptions options)
{
    // Set while lock prefixes are dropped on a process with one thread, whose thread creation must be caught.
    private volatile bool _watching;
    private bool _restoreRegistered;

    public bool IsWatching => _watching;

    private int Pid => process.Pid;

    /// <summary>The lock-prefix sites of every module, at their run-time addresses.</summary>
    public List<LockSite> Sites()
    {
        var sites = new List<LockSite>();
        foreach (var module in process.Process.Modules)
        {
            if (module.Elf.FindSection(SiteTables.LockPrefixTable) is null)
                continue;
            foreach (var site in SiteTables.Read(module.Elf).LockPrefixes)
                sites.Add(new LockSite(site.Address + module.LoadBias, $"the lock prefix at {module.Name}+0x{site.Address:x}"));
        }
        return sites;
    }

    /// <summary>
    /// Drops the <c>lock</c> prefix of every <c>LP_LOCK_PREFIX</c> site of every module (the byte becomes the harmless
    /// <c>ds</c> prefix), in one stop, when only one thread can run at a time: every thread of the process is bound
    /// to the same single CPU, or the machine has one CPU online, or the process has a single thread. In the last
    /// case the process stays watched (the kernel reports thread and process creation):
    /// <see cref="Watch"/> restores the prefixes before a second thread runs, and detaching restores them.
    /// </summary>
    /// <exception cref="SiteRefusedException">Several threads may run at once (<see cref="SiteRefusal.ThreadsOnSeveralCpus"/>), or a site holds something else.</exception>
    public LockPrefixReport Drop()
    {
        var sites = Sites();
        if (sites.Count == 0)
            return new LockPrefixReport(false, "no lock-prefix sites", 0, 0, 0, TimeSpan.Zero, false);
        var pokes = SitePlans.LockPrefixes(Pid, sites, drop: true, process.ReadMemory);
        UniprocessorReason? decision = null;
        var report = TextPoker.Poke(process, pokes, new PokeOptions
        {
            Timeout = options.Timeout,
            Cancellation = options.Cancellation,
            // Decided with every thread held: none can be created between the check and the write.
            BeforeWrite = threads => decision = DecideInsideStop(threads) ?? throw new SiteRefusedException(SiteRefusal.ThreadsOnSeveralCpus,
                $"process {Pid} has {threads.Count} threads that may run on several CPUs at once; its lock prefixes stay (bind it to one CPU with taskset to run it uniprocessor)"),
        });
        Dropped(decision!.Value);
        return new LockPrefixReport(true, decision.Value.Reason, sites.Count, pokes.Count, report.Threads, report.Pause, decision.Value.NeedsWatch);
    }

    /// <summary>Puts back the <c>lock</c> prefix of every <c>LP_LOCK_PREFIX</c> site of every module, in one stop, and ends any watch.</summary>
    /// <exception cref="SiteRefusedException">A site holds something else.</exception>
    public LockPrefixReport Restore()
    {
        var sites = Sites();
        var pokes = SitePlans.LockPrefixes(Pid, sites, drop: false, process.ReadMemory);
        var report = TextPoker.Poke(process, pokes, new PokeOptions
        {
            Timeout = options.Timeout,
            BeforeWrite = _ =>
            {
                if (_watching)
                    process.WatchTasks(false);
            },
        });
        _watching = false;
        return new LockPrefixReport(false, "more than one thread may run", sites.Count, pokes.Count, report.Threads, report.Pause, false);
    }

    /// <summary>
    /// After <see cref="Drop"/> on a single thread: lets the process run and waits until it creates a thread (or a
    /// process sharing its memory), then restores the lock prefixes before the new thread runs its first instruction.
    /// A forked process with its own memory gets its prefixes restored before it runs and is let go; the watch goes
    /// on. Ends also when the process runs execve or exits, when the process is detached, or on
    /// <paramref name="cancellation"/> (prefixes restored). Blocks the calling thread meanwhile.
    /// </summary>
    public LockWatchResult Watch(CancellationToken cancellation)
    {
        if (!_watching)
            throw new InvalidOperationException($"process {Pid}: no lock prefixes were dropped on a single thread; nothing to watch");
        var sites = Sites().Select(s => s.Address).ToList();
        var children = 0;
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellation, process.Detaching);
        while (true)
        {
            var seen = process.WaitForTaskEvent(either.Token);
            switch (seen.Kind)
            {
                case TaskEventKind.NewThread:
                    return new LockWatchResult($"thread {seen.NewId} was created: lock prefixes restored before it ran", Restore(), children);
                case TaskEventKind.NewProcess when seen.IsVfork:
                    // Its parent waits until it execs or exits: still one thread on this memory at a time.
                    process.ReleaseForkedChild(seen.NewId);
                    continue;
                case TaskEventKind.NewProcess when !process.SharesMemoryWith(seen.NewId):
                    process.ReleaseForkedChild(seen.NewId, child => RestoreIn(child, sites));
                    children++;
                    continue;
                case TaskEventKind.NewProcess:
                    LockPrefixReport? shared = null;
                    process.ReleaseForkedChild(seen.NewId, _ => shared = Restore());
                    return new LockWatchResult($"process {seen.NewId} sharing its memory was created: lock prefixes restored before it ran", shared, children);
                case TaskEventKind.Exec:
                    process.WatchTasks(false);
                    _watching = false;
                    return new LockWatchResult($"process {Pid} ran execve: its new program has its own code", null, children);
                case TaskEventKind.Exited:
                    _watching = false;
                    return new LockWatchResult($"process {Pid} exited", null, children);
                default:
                    return new LockWatchResult("watch cancelled: lock prefixes restored", Restore(), children);
            }
        }
    }

    /// <summary>Why only one thread of the held <paramref name="threads"/> can run at a time, or null. Inside a stop.</summary>
    private UniprocessorReason? WhyOneThreadRuns(IReadOnlyList<StoppedThread> threads)
    {
        if (ProcStatus.OnlineCpus() == 1)
            return new("the machine has one CPU online", false);
        var bound = threads.Select(t => ProcStatus.AllowedCpus(Pid, t.Tid)).Distinct().ToList();
        if (bound.Count == 1 && bound[0] is { } cpu && !cpu.Contains(',', StringComparison.Ordinal) && !cpu.Contains('-', StringComparison.Ordinal))
            return new($"every thread is bound to CPU {cpu}", false);
        if (threads.Count == 1)
            return new("one thread; its next thread is caught before it runs", true);
        return null;
    }

    /// <summary>
    /// Inside the stop that drops the prefixes: why one thread runs (null when several may), and for a single thread
    /// the kernel told to report its next thread before it runs — set while the thread is held, so none escapes.
    /// </summary>
    public UniprocessorReason? DecideInsideStop(IReadOnlyList<StoppedThread> threads)
    {
        var reason = WhyOneThreadRuns(threads);
        if (reason is { NeedsWatch: true })
            process.WatchTasks(true);
        return reason;
    }

    /// <summary>After the prefixes were dropped for <paramref name="reason"/>: a single thread is watched, and detaching puts them back.</summary>
    public void Dropped(UniprocessorReason reason)
    {
        if (!reason.NeedsWatch)
            return;
        _watching = true;
        if (_restoreRegistered)
            return;
        _restoreRegistered = true;
        // Once detached, nobody would catch the next thread: the prefixes go back first.
        process.BeforeDetach(() =>
        {
            if (_watching)
                Restore();
        });
    }

    // A forked child has its own copy of the code: put its prefixes back before it runs (it may start threads).
    private static void RestoreIn(int child, List<ulong> sites)
    {
        using var memory = new ProcessMemory(child);
        var held = new byte[1];
        foreach (var address in sites)
        {
            if (!memory.TryRead(address, held) || held[0] != SitePlans.DroppedLockPrefix)
                continue;
            memory.Write(address, [SitePlans.LockPrefix]);
            if (!memory.TryRead(address, held) || held[0] != SitePlans.LockPrefix)
                throw new TextPokeException(address, $"process {child}: the lock prefix at 0x{address:x} reads back 0x{held[0]:x2} after writing 0xf0");
        }
    }
}
