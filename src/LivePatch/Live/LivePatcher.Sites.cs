using LivePatch.Poke;
using LivePatch.Sites;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>What <see cref="LivePatcher.ApplySites"/> does; by default everything this CPU and situation call for.</summary>
public sealed class SitesRequest
{
    /// <summary>Rewrite the alternatives whose feature the CPU has (default true).</summary>
    public bool Alternatives { get; init; } = true;

    /// <summary>The CPU to choose alternatives for (detected when null).</summary>
    public CpuFeatures? Cpu { get; init; }

    /// <summary>The call-site backend (<see cref="CallSiteBackend.Default"/>); null leaves call sites alone.</summary>
    public CallSiteBackend? CallSites { get; init; } = CallSiteBackend.Default;

    /// <summary>Drop the lock prefixes when only one thread can run (default true); see <see cref="LivePatcher.DropLockPrefixes"/>.</summary>
    public bool DropLockPrefixes { get; init; } = true;
}

/// <summary>One module's part of <see cref="LivePatcher.ApplySites"/>.</summary>
/// <param name="Module">The module's file name.</param>
/// <param name="AlternativesChosen">Alternatives whose replacement this CPU gets.</param>
/// <param name="AlternativesWritten">Of those, written now (the others held it already).</param>
/// <param name="CallSites">Call sites of the module.</param>
/// <param name="CallSitesChanged">Call sites the backend rewrites.</param>
/// <param name="CallSitesWritten">Of those, written now.</param>
public sealed record ModuleSitesReport(string Module, int AlternativesChosen, int AlternativesWritten, int CallSites, int CallSitesChanged, int CallSitesWritten);

/// <summary>What <see cref="LivePatcher.ApplySites"/> did, in one stop.</summary>
/// <param name="Modules">Each module with site tables.</param>
/// <param name="LockPrefixes">Lock-prefix sites in all modules.</param>
/// <param name="LockPrefixesDropped">True when they are dropped now.</param>
/// <param name="LockReason">Why they were dropped or kept.</param>
/// <param name="Written">Sites written in the stop, of every kind.</param>
/// <param name="ThreadsStopped">Threads held (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
/// <param name="WatchingLockPrefixes">True when the prefixes were dropped for a single thread, which must be watched (<see cref="LivePatcher.WatchLockPrefixes"/>).</param>
public sealed record SitesReport(IReadOnlyList<ModuleSitesReport> Modules, int LockPrefixes, bool LockPrefixesDropped, string LockReason,
    int Written, int ThreadsStopped, TimeSpan Pause, int Attempts, bool WatchingLockPrefixes);

public sealed partial class LivePatcher
{
    /// <summary>
    /// Applies the build-time sites of every module that has them — alternatives for the CPU, call sites by the
    /// backend, lock prefixes dropped when only one thread can run (decided again inside the stop) — in <b>one</b>
    /// stop of every thread, neighbouring writes merged. Sites already in their chosen state are left alone.
    /// </summary>
    /// <exception cref="SiteTableException">A module's tables are malformed.</exception>
    /// <exception cref="PatchRefusedException">A site holds something else than its original or its choice.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public SitesReport ApplySites(SitesRequest? request = null)
    {
        RefuseWhileInterrupted();
        request ??= new SitesRequest();
        var cpu = request.Cpu ?? CpuFeatures.Detect();
        var modules = new List<ModuleSitesReport>();
        var pokes = new List<PokeSite>();
        var slots = new List<(ulong Address, ulong Value, string Site)>();
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

        var locks = LockSites();
        var lockPokes = request.DropLockPrefixes && locks.Count > 0 ? LockPokes(locks, drop: true) : [];
        var lockReason = locks.Count == 0 ? "no lock-prefix sites" : request.DropLockPrefixes ? "" : "kept: not asked to drop them";
        var dropping = request.DropLockPrefixes && locks.Count > 0;
        var watch = false;
        while (true)
        {
            List<PokeSite> all = dropping ? [.. pokes, .. lockPokes] : pokes;
            if (all.Count == 0 && !dropping)
                return new SitesReport(modules, locks.Count, false, lockReason, 0, 0, TimeSpan.Zero, 0, false);
            ThrowIfCancelled();
            try
            {
                var report = TextPoker.Poke(_session, _target, all, _options.Timeout, threads =>
                {
                    RefuseChangedSlots(slots);
                    if (!dropping)
                        return;
                    // Decided with every thread held, as DropLockPrefixes does.
                    var single = UniprocessorReason([.. threads.Select(t => t.Tid)]) ?? throw new LocksMustStay(threads.Count);
                    lockReason = single.Reason;
                    watch = single.NeedsWatch;
                    if (watch)
                        _session.SetOptions(PtraceSession.WatchTaskOptions);
                }, _options.Cancellation);
                if (dropping)
                    _watchingLocks |= watch;
                var written = modules.Sum(m => m.AlternativesWritten + m.CallSitesWritten) + (dropping ? lockPokes.Count : 0);
                return new SitesReport(modules, locks.Count, dropping, lockReason, written, written == 0 ? 0 : report.Threads, report.Pause, report.Attempts, dropping && watch);
            }
            catch (LocksMustStay refusal)
            {
                // Several threads may run: everything else still goes in, with the prefixes kept.
                dropping = false;
                lockReason = $"kept: {refusal.Threads} threads may run on several CPUs at once";
            }
        }
    }

    private sealed class LocksMustStay(int threads) : Exception($"{threads} threads may run on several CPUs")
    {
        public int Threads { get; } = threads;
    }

    /// <summary>
    /// Rewrites the <c>LP_ALTERNATIVE</c> sites of a module (the main program when <paramref name="module"/> is null)
    /// whose feature this CPU has (<paramref name="cpu"/>, detected when null): each replacement relocated to its site
    /// (RIP-relative operands and branches keep their targets), padded with NOPs, every site written in one stop. A
    /// site with several replacements (<c>LP_ALTERNATIVE_2</c>) gets the last one whose feature the CPU has. Sites
    /// already rewritten are left alone.
    /// </summary>
    /// <exception cref="SiteTableException">The module's tables are malformed.</exception>
    /// <exception cref="PatchRefusedException">A site holds neither its original nor its replacement bytes, or a replacement cannot be moved there.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public AlternativesReport ApplyAlternatives(string? module = null, CpuFeatures? cpu = null)
    {
        RefuseWhileInterrupted();
        var target = ModuleOrMain(module);
        var (chosen, sites) = PlanAlternatives(target, cpu ?? CpuFeatures.Detect());
        if (sites.Count == 0)
            return new AlternativesReport(target.Name, chosen, 0, 0, TimeSpan.Zero, 0);
        ThrowIfCancelled();
        var report = TextPoker.Poke(_session, _target, sites, _options.Timeout, _options.Cancellation);
        return new AlternativesReport(target.Name, chosen, sites.Count, report.Threads, report.Pause, report.Attempts);
    }

    /// <summary>The alternatives of <paramref name="target"/> this CPU calls for, and the writes still needed for them.</summary>
    private (int Chosen, List<PokeSite> Sites) PlanAlternatives(TargetModule target, CpuFeatures cpu)
    {
        var bias = target.LoadBias;
        var sites = new List<PokeSite>();
        var chosen = SiteChooser.Choose(target.Elf, cpu).Where(c => c.Kind == SiteKind.Alternative && c.UseReplacement).ToList();
        foreach (var choice in chosen)
        {
            var address = choice.Address + bias;
            var where = $"the alternative at {target.Name}+0x{choice.Address:x}";
            var buffer = new PatchBuffer(address, choice.Original.Length);
            try
            {
                if (choice.Replacement.Length > 0)
                    buffer.Write(Relocator.Relocate(choice.Replacement, choice.ReplacementAddress + bias, address).Bytes.Span);
            }
            catch (Exception error) when (error is RelocationException or InvalidInstructionException or PatchTooLongException)
            {
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced, $"{where} in process {Pid}: its replacement cannot be moved there: {error.Message}");
            }
            buffer.Fill();
            var current = _target.ReadMemory(address, choice.Original.Length);
            if (current.AsSpan().SequenceEqual(buffer.Bytes))
                continue;
            if (!current.AsSpan().SequenceEqual(choice.Original))
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced,
                    $"{where} in process {Pid} holds {Convert.ToHexStringLower(current)}, neither its original nor its replacement");
            sites.Add(new PokeSite(address, choice.Original, buffer.Bytes.ToArray(), choice.Original.Length, where));
        }
        return (chosen.Count, sites);
    }

    /// <summary>
    /// Switches the static key <paramref name="key"/> of a module (the main program when <paramref name="module"/> is
    /// null) on or off: every <c>LP_STATIC_BRANCH</c> site of the key becomes a <c>jmp</c> to its on path or the 5-byte
    /// NOP again, all in one stop. Sites already in the asked state are left alone.
    /// </summary>
    /// <exception cref="PatchRefusedException">The module has no site for the key, or a site holds something else.</exception>
    /// <exception cref="TargetException">Threads did not stop until the timeout.</exception>
    public StaticKeyReport SetStaticKey(string key, bool enabled, string? module = null)
    {
        RefuseWhileInterrupted();
        ArgumentException.ThrowIfNullOrEmpty(key);
        var target = ModuleOrMain(module);
        var bias = target.LoadBias;
        var keys = SiteTables.Read(target.Elf).StaticKeys;
        var sites = keys.Where(k => k.Key == key).ToList();
        if (sites.Count == 0)
            throw new PatchRefusedException(LivePatchRefusal.UnknownStaticKey,
                $"{target.Name} in process {Pid} has no static key '{key}'{(keys.Count == 0 ? "" : $"; its keys: {string.Join(", ", keys.Select(k => k.Key).Distinct())}")}");
        var pokes = new List<PokeSite>();
        foreach (var site in sites)
        {
            var address = site.Address + bias;
            var jump = new PatchBuffer(address, Branch.Rel32Length);
            jump.WriteJump(site.Target + bias);
            var off = SiteTables.StaticKeyNop.ToArray();
            var (from, to) = enabled ? (off, jump.Bytes.ToArray()) : (jump.Bytes.ToArray(), off);
            var current = _target.ReadMemory(address, Branch.Rel32Length);
            if (current.AsSpan().SequenceEqual(to))
                continue;
            if (!current.AsSpan().SequenceEqual(from))
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced,
                    $"static key '{key}' site at {target.Name}+0x{site.Address:x} in process {Pid} holds {Convert.ToHexStringLower(current)}, neither its NOP nor its jump");
            pokes.Add(new PokeSite(address, from, to, Branch.Rel32Length, $"static key '{key}' site at {target.Name}+0x{site.Address:x}"));
        }
        if (pokes.Count == 0)
            return new StaticKeyReport(key, enabled, sites.Count, 0, 0, TimeSpan.Zero, 0);
        ThrowIfCancelled();
        var report = TextPoker.Poke(_session, _target, pokes, _options.Timeout, _options.Cancellation);
        return new StaticKeyReport(key, enabled, sites.Count, pokes.Count, report.Threads, report.Pause, report.Attempts);
    }

}
