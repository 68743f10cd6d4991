using LivePatch.Poke;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>Reads the bytes a target holds now: <paramref name="count"/> bytes at <paramref name="address"/>.</summary>
internal delegate byte[] CurrentBytes(ulong address, int count);

/// <summary>
/// The plan steps of build-time sites, as the kernel's <c>__jump_label_patch</c> computes and checks before
/// <c>__jump_label_transform</c> pokes: each is a pure function of the module's choices, its load bias and the bytes
/// the target holds now, and returns the writes still needed (a site already in its chosen state needs none) or
/// refuses a site that holds anything else. Poking is one call of <see cref="TextPoker"/> afterwards.
/// </summary>
internal static class SitePlans
{
    /// <summary>The byte a dropped <c>lock</c> prefix becomes: <c>ds</c>, harmless in 64-bit mode, as the kernel's UP code.</summary>
    public const byte DroppedLockPrefix = 0x3e;

    /// <summary>The <c>lock</c> prefix.</summary>
    public const byte LockPrefix = 0xf0;

    /// <summary>
    /// Alternatives whose replacement the CPU gets (<paramref name="chosen"/>, link-time addresses): each replacement
    /// relocated to its site, NOP-padded; the writes still needed.
    /// </summary>
    /// <exception cref="SiteRefusedException">A replacement cannot be moved to its site, or a site holds neither its original nor its replacement.</exception>
    public static List<PokeSite> Alternatives(int pid, string module, IEnumerable<SiteChoice> chosen, ulong bias, CurrentBytes current)
    {
        var sites = new List<PokeSite>();
        foreach (var choice in chosen)
        {
            var address = choice.Address + bias;
            var where = $"the alternative at {module}+0x{choice.Address:x}";
            var buffer = new PatchBuffer(address, choice.Original.Length);
            try
            {
                if (choice.Replacement.Length > 0)
                    buffer.Write(Relocator.Relocate(choice.Replacement, choice.ReplacementAddress + bias, address).Bytes.Span);
            }
            catch (Exception error) when (error is RelocationException or InvalidInstructionException or PatchTooLongException)
            {
                throw new SiteRefusedException(SiteRefusal.ReplacementDoesNotFit, $"{where} in process {pid}: its replacement cannot be moved there: {error.Message}");
            }
            buffer.Fill();
            var now = current(address, choice.Original.Length);
            if (now.AsSpan().SequenceEqual(buffer.Bytes))
                continue;
            if (!now.AsSpan().SequenceEqual(choice.Original))
                throw new SiteRefusedException(SiteRefusal.UnexpectedBytes, $"{where} in process {pid} holds {Convert.ToHexStringLower(now)}, neither its original nor its replacement");
            sites.Add(new PokeSite(address, choice.Original, buffer.Bytes.ToArray(), choice.Original.Length, where));
        }
        return sites;
    }

    /// <summary>
    /// The sites of static key <paramref name="key"/> switched on (a <c>jmp</c> to the on path) or off (the 5-byte NOP):
    /// the writes still needed.
    /// </summary>
    /// <exception cref="SiteRefusedException">A site holds neither its NOP nor its jump.</exception>
    public static List<PokeSite> StaticKey(int pid, string module, string key, bool enabled, IEnumerable<StaticKeySite> sites, ulong bias, CurrentBytes current)
    {
        var pokes = new List<PokeSite>();
        var off = SiteTables.StaticKeyNop.ToArray();
        foreach (var site in sites.Where(s => s.Key == key))
        {
            var address = site.Address + bias;
            var jump = new PatchBuffer(address, Branch.Rel32Length);
            jump.WriteJump(site.Target + bias);
            var (from, to) = enabled ? (off, jump.Bytes.ToArray()) : (jump.Bytes.ToArray(), off);
            var where = $"static key '{key}' site at {module}+0x{site.Address:x}";
            var now = current(address, Branch.Rel32Length);
            if (now.AsSpan().SequenceEqual(to))
                continue;
            if (!now.AsSpan().SequenceEqual(from))
                throw new SiteRefusedException(SiteRefusal.UnexpectedBytes, $"{where} in process {pid} holds {Convert.ToHexStringLower(now)}, neither its NOP nor its jump");
            pokes.Add(new PokeSite(address, from, to, Branch.Rel32Length, where));
        }
        return pokes;
    }

    /// <summary>Lock-prefix sites (run-time addresses) dropped (<c>lock</c> → <c>ds</c>) or restored: the writes still needed.</summary>
    /// <exception cref="SiteRefusedException">A site holds neither <c>lock</c> nor its dropped form.</exception>
    public static List<PokeSite> LockPrefixes(int pid, IEnumerable<LockSite> sites, bool drop, CurrentBytes current)
    {
        var (from, to) = drop ? (LockPrefix, DroppedLockPrefix) : (DroppedLockPrefix, LockPrefix);
        var pokes = new List<PokeSite>();
        foreach (var site in sites)
        {
            var held = current(site.Address, 1)[0];
            if (held == to)
                continue;
            if (held != from)
                throw new SiteRefusedException(SiteRefusal.UnexpectedBytes,
                    $"{site.Description} in process {pid} holds 0x{held:x2}, neither lock (0xf0) nor its dropped form (0x3e)");
            pokes.Add(new PokeSite(site.Address, [from], [to], 1, site.Description));
        }
        return pokes;
    }

    /// <summary>
    /// Call sites as the backend decided them (run-time addresses): the writes still needed, and the slot values the
    /// choices assume (checked again inside the stop).
    /// </summary>
    /// <exception cref="SiteRefusedException">A site holds neither its indirect call nor the backend's choice.</exception>
    public static CallSitesPlan CallSites(int pid, string module, IReadOnlyList<CallSiteDecision> decisions, ulong bias, CurrentBytes current)
    {
        var pokes = new List<PokeSite>();
        var slots = new List<SlotExpectation>();
        foreach (var decision in decisions)
        {
            var where = CallSiteDescription(module, decision.Site);
            var now = current(decision.Address, decision.Site.Length);
            if (now.AsSpan().SequenceEqual(decision.Chosen))
                continue;
            if (!now.AsSpan().SequenceEqual(decision.Original))
                throw new SiteRefusedException(SiteRefusal.UnexpectedBytes,
                    $"{where} in process {pid} holds {Convert.ToHexStringLower(now)}, neither its indirect call nor what the backend chose ({decision.Reason}): " +
                    "a site is rewritten only from its indirect call; restore the call sites first if the ops table changed (livepatch callsites PID --restore)");
            pokes.Add(new PokeSite(decision.Address, decision.Original, decision.Chosen, decision.Site.Length, where));
            if (decision.SlotValue is { } value)
                slots.Add(new SlotExpectation(decision.Site.Slot + bias, value, where));
        }
        return new CallSitesPlan([.. decisions], pokes, slots);
    }

    /// <summary>
    /// Every call site put back to its indirect call (<paramref name="original"/> gives the bytes as built): the writes
    /// still needed, with decisions saying so.
    /// </summary>
    /// <exception cref="SiteRefusedException">A site holds bytes that are not whole instructions, or a call not ending at its end.</exception>
    public static CallSitesPlan RestoreCallSites(int pid, string module, IEnumerable<CallSite> sites, ulong bias, Func<CallSite, byte[]> original, CurrentBytes current)
    {
        var decisions = new List<CallSiteDecision>();
        var pokes = new List<PokeSite>();
        foreach (var site in sites)
        {
            var address = site.Address + bias;
            var built = original(site);
            decisions.Add(new CallSiteDecision(site, address, built, built, "restored: the indirect call"));
            var now = current(address, site.Length);
            if (now.AsSpan().SequenceEqual(built))
                continue;
            var where = CallSiteDescription(module, site);
            if (CallSitePlanner.CallNotAtEnd(now, address) is { } foreign)
                throw new SiteRefusedException(SiteRefusal.NotACallSite,
                    $"{where} in process {pid} holds {Convert.ToHexStringLower(now)} ({foreign}): not a call site as LivePatch writes them; left alone");
            pokes.Add(new PokeSite(address, now, built, site.Length, where));
        }
        return new CallSitesPlan(decisions, pokes, []);
    }

    private static string CallSiteDescription(string module, CallSite site) => $"call site '{site.Name}' at {module}+0x{site.Address:x}";
}

/// <summary>A lock-prefix site at its run-time address, named for messages.</summary>
internal sealed record LockSite(ulong Address, string Description);

/// <summary>The value an ops slot must still hold when its call sites are written.</summary>
internal readonly record struct SlotExpectation(ulong Address, ulong Value, string Site);

/// <summary>What a module's call sites need: the backend's decision for each, the writes, and the slot values they assume.</summary>
internal sealed record CallSitesPlan(List<CallSiteDecision> Decisions, List<PokeSite> Pokes, List<SlotExpectation> Slots);
