using LivePatch.Poke;
using LivePatch.Sites;
using LivePatch.Targets;

namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// Rewrites every call site of a module (the main program when <paramref name="module"/> is null) as
    /// <paramref name="backend"/> decides (<see cref="CallSiteBackend.Default"/> when null) from the function each slot
    /// holds now, all in one stop of every thread. Sites already holding the backend's choice are left alone; sites the
    /// backend leaves unchanged keep their indirect call. Sites are rewritten only from the indirect call they were
    /// built with: after the ops table changed, <see cref="RestoreCallSites"/> first. Inside the stop, the slots of the
    /// sites being written are read again: if one changed since the choice, nothing is written.
    /// </summary>
    /// <exception cref="SiteTableException">The module's tables are malformed.</exception>
    /// <exception cref="PatchRefusedException">A site holds neither its indirect call nor the backend's choice (<see cref="LivePatchRefusal.AlreadyReplaced"/>),
    /// or a slot changed meanwhile (<see cref="LivePatchRefusal.CallSiteSlotChanged"/>).</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public CallSitesReport ApplyCallSites(CallSiteBackend? backend = null, string? module = null)
    {
        RefuseWhileInterrupted();
        var target = ModuleOrMain(module);
        var plan = PlanCallSites(target, backend ?? CallSiteBackend.Default);
        return PokeCallSites(target.Name, plan.Decisions, plan.Pokes, _ => RefuseChangedSlots(plan.Slots));
    }

    private sealed record CallSitesPlan(List<CallSiteDecision> Decisions, List<PokeSite> Pokes, List<(ulong Address, ulong Value, string Site)> Slots);

    /// <summary>The backend's decision for every call site of <paramref name="target"/>, the writes still needed, and the slot values they assume.</summary>
    private CallSitesPlan PlanCallSites(TargetModule target, CallSiteBackend backend)
    {
        var sites = SiteTables.Read(target.Elf).CallSites;
        var decisions = CallSitePlanner.Decide(new ProcessCallSiteView(_target, target), sites, backend);
        var pokes = new List<PokeSite>();
        var slots = new List<(ulong Address, ulong Value, string Site)>();
        foreach (var decision in decisions)
        {
            var where = CallSiteDescription(target, decision.Site);
            var current = _target.ReadMemory(decision.Address, decision.Site.Length);
            if (current.AsSpan().SequenceEqual(decision.Chosen))
                continue;
            if (!current.AsSpan().SequenceEqual(decision.Original))
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced,
                    $"{where} in process {Pid} holds {Convert.ToHexStringLower(current)}, neither its indirect call nor what the backend chose ({decision.Reason}): " +
                    "a site is rewritten only from its indirect call; restore the call sites first if the ops table changed (RestoreCallSites, livepatch callsites PID --restore)");
            pokes.Add(new PokeSite(decision.Address, decision.Original, decision.Chosen, decision.Site.Length, where));
            if (decision.SlotValue is { } value)
                slots.Add((decision.Site.Slot + target.LoadBias, value, where));
        }
        return new CallSitesPlan([.. decisions], pokes, slots);
    }

    /// <summary>
    /// Puts back the indirect call of every call site of a module (the main program when <paramref name="module"/> is
    /// null) that holds anything else, in one stop: afterwards each site calls whatever its slot holds at the time of
    /// the call again, and <see cref="ApplyCallSites"/> may decide anew.
    /// </summary>
    /// <exception cref="PatchRefusedException">A site holds bytes that are not whole instructions, or a call not ending at the site's end: not something LivePatch wrote.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a site, until the timeout.</exception>
    public CallSitesReport RestoreCallSites(string? module = null)
    {
        RefuseWhileInterrupted();
        var target = ModuleOrMain(module);
        var view = new ProcessCallSiteView(_target, target);
        var decisions = new List<CallSiteDecision>();
        var pokes = new List<PokeSite>();
        foreach (var site in SiteTables.Read(target.Elf).CallSites)
        {
            var address = site.Address + view.Bias;
            var original = view.Original(site);
            decisions.Add(new CallSiteDecision(site, address, original, original, "restored: the indirect call"));
            var current = _target.ReadMemory(address, site.Length);
            if (current.AsSpan().SequenceEqual(original))
                continue;
            var where = CallSiteDescription(target, site);
            if (CallSitePlanner.CallNotAtEnd(current, address) is { } foreign)
                throw new PatchRefusedException(LivePatchRefusal.AlreadyReplaced,
                    $"{where} in process {Pid} holds {Convert.ToHexStringLower(current)} ({foreign}): not a call site as LivePatch writes them; left alone");
            pokes.Add(new PokeSite(address, current, original, site.Length, where));
        }
        return PokeCallSites(target.Name, decisions, pokes);
    }

    private CallSitesReport PokeCallSites(string module, List<CallSiteDecision> decisions, List<PokeSite> pokes,
        Action<IReadOnlyList<StoppedThread>>? beforeWrite = null)
    {
        var choices = SiteChooser.CallSiteChoices(decisions).ToList();
        var changing = decisions.Count(d => d.Changes);
        if (pokes.Count == 0)
            return new CallSitesReport(module, decisions.Count, changing, 0, 0, TimeSpan.Zero, 0, choices);
        ThrowIfCancelled();
        var report = TextPoker.Poke(_session, _target, pokes, _options.Timeout, beforeWrite, _options.Cancellation);
        return new CallSitesReport(module, decisions.Count, changing, pokes.Count, report.Threads, report.Pause, report.Attempts, choices);
    }

    /// <summary>Inside the stop: each slot still holds the function its site was decided for (one read for a compact ops table).</summary>
    private void RefuseChangedSlots(List<(ulong Address, ulong Value, string Site)> slots)
    {
        if (slots.Count == 0)
            return;
        var start = slots.Min(s => s.Address);
        var span = slots.Max(s => s.Address) + 8 - start;
        var table = span <= 4096 ? _target.ReadMemory(start, (int)span) : null;
        foreach (var (address, value, site) in slots)
        {
            var now = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(
                table is null ? _target.ReadMemory(address, 8) : table.AsSpan((int)(address - start), 8));
            if (now != value)
                throw new PatchRefusedException(LivePatchRefusal.CallSiteSlotChanged,
                    $"the slot of {site} in process {Pid} changed from 0x{value:x} to 0x{now:x} while the call sites were being applied; nothing was written: apply again once the ops table is set");
        }
    }

    private static string CallSiteDescription(TargetModule module, CallSite site) =>
        $"call site '{site.Name}' at {module.Name}+0x{site.Address:x}";
}

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
