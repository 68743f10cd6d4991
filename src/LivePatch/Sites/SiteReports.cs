using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>What <see cref="SitePatcher.ApplySites"/> does; by default everything this CPU and situation call for.</summary>
public sealed class SitesRequest
{
    /// <summary>Rewrite the alternatives whose feature the CPU has (default true).</summary>
    public bool Alternatives { get; init; } = true;

    /// <summary>The CPU to choose alternatives for (detected when null).</summary>
    public CpuFeatures? Cpu { get; init; }

    /// <summary>The call-site backend (<see cref="CallSiteBackend.Default"/>); null leaves call sites alone.</summary>
    public CallSiteBackend? CallSites { get; init; } = CallSiteBackend.Default;

    /// <summary>Drop the lock prefixes when only one thread can run (default true); see <see cref="SitePatcher.DropLockPrefixes"/>.</summary>
    public bool DropLockPrefixes { get; init; } = true;
}

/// <summary>One module's part of <see cref="SitePatcher.ApplySites"/>.</summary>
/// <param name="Module">The module's file name.</param>
/// <param name="AlternativesChosen">Alternatives whose replacement this CPU gets.</param>
/// <param name="AlternativesWritten">Of those, written now (the others held it already).</param>
/// <param name="CallSites">Call sites of the module.</param>
/// <param name="CallSitesChanged">Call sites the backend rewrites.</param>
/// <param name="CallSitesWritten">Of those, written now.</param>
public sealed record ModuleSitesReport(string Module, int AlternativesChosen, int AlternativesWritten, int CallSites, int CallSitesChanged, int CallSitesWritten);

/// <summary>What <see cref="SitePatcher.ApplySites"/> did, in one stop.</summary>
/// <param name="Modules">Each module with site tables.</param>
/// <param name="LockPrefixes">Lock-prefix sites in all modules.</param>
/// <param name="LockPrefixesDropped">True when they are dropped now.</param>
/// <param name="LockReason">Why they were dropped or kept.</param>
/// <param name="Written">Sites written in the stop, of every kind.</param>
/// <param name="ThreadsStopped">Threads held (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
/// <param name="WatchingLockPrefixes">True when the prefixes were dropped for a single thread, which must be watched (<see cref="SitePatcher.WatchLockPrefixes"/>).</param>
public sealed record SitesReport(IReadOnlyList<ModuleSitesReport> Modules, int LockPrefixes, bool LockPrefixesDropped, string LockReason,
    int Written, int ThreadsStopped, TimeSpan Pause, int Attempts, bool WatchingLockPrefixes);


/// <summary>What a change of the lock prefixes did.</summary>
/// <param name="Dropped">True when the prefixes are now dropped (uniprocessor code), false when they are all <c>lock</c> again.</param>
/// <param name="Reason">Why this state is safe or was chosen (<c>one thread; its next thread is caught before it runs</c>).</param>
/// <param name="Sites">The lock-prefix sites of every module of the process.</param>
/// <param name="Written">Sites written (the others were already in that state).</param>
/// <param name="ThreadsStopped">Threads held during the write.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Watching">True when the prefixes were dropped for a single thread: the patcher must watch for the
/// next thread (<see cref="SitePatcher.WatchLockPrefixes"/>) and stays attached until then.</param>
public sealed record LockPrefixReport(bool Dropped, string Reason, int Sites, int Written, int ThreadsStopped, TimeSpan Pause, bool Watching);

/// <summary>Why <see cref="SitePatcher.WatchLockPrefixes"/> ended.</summary>
/// <param name="Reason">In words: <c>thread 1234 was created: lock prefixes restored before it ran</c>.</param>
/// <param name="Restore">The restore, when one was made (a new thread, a process sharing memory, or cancellation).</param>
/// <param name="ChildrenRestored">Forked processes (own memory) whose lock prefixes were restored before they ran.</param>
public sealed record LockWatchResult(string Reason, LockPrefixReport? Restore, int ChildrenRestored);


/// <summary>What applying or restoring a module's call sites did.</summary>
/// <param name="Module">The module's file name.</param>
/// <param name="Sites">Its call sites.</param>
/// <param name="Changed">Of those, sites whose chosen bytes differ from the indirect call they were built with.</param>
/// <param name="Written">Sites written now (the others already held their choice).</param>
/// <param name="ThreadsStopped">Threads held in the stop (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made, including retries while a thread was inside a site.</param>
/// <param name="Choices">Each site: its name, bytes as built and as chosen, and why (addresses in the process).</param>
public sealed record CallSitesReport(string Module, int Sites, int Changed, int Written, int ThreadsStopped, TimeSpan Pause, int Attempts, IReadOnlyList<SiteChoice> Choices);

/// <summary>What applying a module's alternatives did.</summary>
/// <param name="Module">The module's file name.</param>
/// <param name="Chosen">Sites whose replacement this CPU calls for.</param>
/// <param name="Written">Of those, sites rewritten now (the others already held their replacement).</param>
/// <param name="ThreadsStopped">Threads held in the stop (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made, including retries while a thread was inside a site.</param>
public sealed record AlternativesReport(string Module, int Chosen, int Written, int ThreadsStopped, TimeSpan Pause, int Attempts);

/// <summary>What switching a static key did.</summary>
/// <param name="Key">The key's name.</param>
/// <param name="Enabled">On (jumps) or off (NOPs).</param>
/// <param name="Sites">The key's sites in the module.</param>
/// <param name="Written">Of those, sites rewritten now (the others were already in that state).</param>
/// <param name="ThreadsStopped">Threads held in the stop (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
public sealed record StaticKeyReport(string Key, bool Enabled, int Sites, int Written, int ThreadsStopped, TimeSpan Pause, int Attempts);
