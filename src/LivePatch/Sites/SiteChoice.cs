using LivePatch.Elf;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>The kind of a build-time site.</summary>
public enum SiteKind
{
    /// <summary>An <c>LP_ALTERNATIVE</c>: original instructions, or a replacement when the CPU has a feature.</summary>
    Alternative,
    /// <summary>An <c>LP_LOCK_PREFIX</c>: a <c>lock</c> prefix, needed only while more than one thread can run.</summary>
    LockPrefix,
    /// <summary>An <c>LP_STATIC_BRANCH</c>: a 5-byte NOP, or a jump to the on path while its key is on.</summary>
    StaticKey,
    /// <summary>An <c>LP_CALLSITE</c>: an indirect call through an ops table, or what a <see cref="CallSiteBackend"/> makes of it.</summary>
    CallSite,
}

/// <summary>A site of a module with the bytes it holds, the bytes it would get, and why.</summary>
/// <param name="Kind">What kind of site it is.</param>
/// <param name="Address">The site's address in the module (before any load bias).</param>
/// <param name="Original">The bytes the module holds there now (for a lock prefix, the whole instruction it prefixes).</param>
/// <param name="Replacement">The bytes the site would take instead (unpadded; the rest of the site becomes NOPs). For a lock
/// prefix, the same instruction with a harmless <c>ds</c> prefix (0x3e) in place of <c>lock</c>.</param>
/// <param name="UseReplacement">True when this CPU or situation calls for the replacement.</param>
/// <param name="Reason">Why, in a few words (<c>cpu has popcnt</c>).</param>
/// <param name="ReplacementAddress">Where the replacement was assembled (its RIP-relative operands and branches are relative to it), or the site's own address.</param>
/// <param name="Name">The site's name where it has one: a call site's <c>ops.member</c>, a static key's key.</param>
public sealed record SiteChoice(SiteKind Kind, ulong Address, byte[] Original, byte[] Replacement, bool UseReplacement, string Reason, ulong ReplacementAddress, string? Name = null);

/// <summary>Decides, for every site of a module, what its code should be on this CPU.</summary>
public static class SiteChooser
{
    /// <summary>
    /// The choice for every site of <paramref name="file"/>: alternatives by <paramref name="cpu"/> (one choice per
    /// site: of several entries for one site, the last whose feature the CPU has); lock prefixes kept (the
    /// multi-threaded choice; dropping them needs a running process known to have one thread); call sites by
    /// <see cref="CallSiteBackend.Default"/> from the slots as the file initialises them.
    /// </summary>
    /// <exception cref="SiteTableException">A table is malformed.</exception>
    public static IReadOnlyList<SiteChoice> Choose(ElfFile file, CpuFeatures cpu)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(cpu);
        var tables = SiteTables.Read(file);
        return [.. FileSiteChoices(file, tables, cpu)
            .Concat(tables.CallSites.Count == 0 ? [] : CallSiteChoices(CallSitePlanner.Decide(new FileCallSiteView(file, tables), tables.CallSites, CallSiteBackend.Default)))
            .OrderBy(c => c.Address)];
    }

    /// <summary>The choice for every site of <paramref name="module"/> in a running process, call sites decided from the slots it holds now.</summary>
    /// <exception cref="SiteTableException">A table is malformed.</exception>
    internal static IReadOnlyList<SiteChoice> Choose(TargetProcess target, TargetModule module, CpuFeatures cpu, CallSiteBackend? backend = null)
    {
        var tables = SiteTables.Read(module.Elf);
        return [.. FileSiteChoices(module.Elf, tables, cpu)
            .Concat(CallSiteChoices(CallSitePlanner.Decide(new ProcessCallSiteView(target, module), tables.CallSites, backend ?? CallSiteBackend.Default))
                .Select(c => c with { Address = c.Address - module.LoadBias, ReplacementAddress = c.ReplacementAddress - module.LoadBias }))
            .OrderBy(c => c.Address)];
    }

    /// <summary>Call-site decisions as choices (addresses as the decisions give them).</summary>
    internal static IEnumerable<SiteChoice> CallSiteChoices(IEnumerable<CallSiteDecision> decisions) => decisions.Select(d =>
        new SiteChoice(SiteKind.CallSite, d.Address, d.Original, d.Chosen, d.Changes, d.Reason, d.Address, d.Site.Name));

    // Alternatives, lock prefixes and static keys: what the file alone decides.
    /// <summary>The entries of each site, sites in table order: adjacent entries of one address form a site (as
    /// <c>LP_ALTERNATIVE_2</c> writes them); a table whose sites come out of order is grouped the slow way.</summary>
    private static IEnumerable<List<AlternativeSite>> EntriesBySite(IReadOnlyList<AlternativeSite> sites)
    {
        for (var i = 1; i < sites.Count; i++)
            if (sites[i].Address < sites[i - 1].Address)
                return sites.GroupBy(s => s.Address).Select(g => g.ToList());
        return Adjacent(sites);

        static IEnumerable<List<AlternativeSite>> Adjacent(IReadOnlyList<AlternativeSite> sites)
        {
            for (var i = 0; i < sites.Count;)
            {
                var group = new List<AlternativeSite>(1) { sites[i++] };
                while (i < sites.Count && sites[i].Address == group[0].Address)
                    group.Add(sites[i++]);
                yield return group;
            }
        }
    }

    private static List<SiteChoice> FileSiteChoices(ElfFile file, SiteTables tables, CpuFeatures cpu)
    {
        var replacements = file.FindSection(SiteTables.ReplacementSection);
        var choices = new List<SiteChoice>();
        foreach (var entries in EntriesBySite(tables.Alternatives))
        {
            var winner = entries.FindLastIndex(s => cpu.Has(s.Feature));
            var site = entries[winner < 0 ? ^1 : winner];
            var replacement = replacements is null ? [] : file.GetSectionData(replacements)
                .Slice((int)(site.ReplacementAddress - replacements.Address), site.ReplacementLength).ToArray();
            var features = entries.Count == 1
                ? $"{(winner == 0 ? "has" : "lacks")} {CpuFeatures.LinuxName(site.Feature)}"
                : string.Join(", ", entries.Select(e => $"{(cpu.Has(e.Feature) ? "has" : "lacks")} {CpuFeatures.LinuxName(e.Feature)}"));
            var reason = entries.Count == 1 || winner < 0 ? $"cpu {features}" : $"cpu {features}: replacement {winner + 1} of {entries.Count}";
            choices.Add(new SiteChoice(SiteKind.Alternative, site.Address, ReadCode(file, site.Address, site.Length), replacement, winner >= 0,
                reason, site.ReplacementAddress));
        }
        foreach (var site in tables.LockPrefixes)
        {
            var instruction = LockedInstruction(file, site.Address);
            choices.Add(new SiteChoice(SiteKind.LockPrefix, site.Address, instruction, [0x3e, .. instruction.AsSpan(1)], false,
                "kept while more than one thread may run (dropped by livepatch run --alternatives or sites PID --up when only one can)", site.Address));
        }
        foreach (var site in tables.StaticKeys)
        {
            var jump = new PatchBuffer(site.Address, Branch.Rel32Length);
            jump.WriteJump(site.Target);
            choices.Add(new SiteChoice(SiteKind.StaticKey, site.Address, ReadCode(file, site.Address, Branch.Rel32Length), jump.Bytes.ToArray(), false,
                $"key '{site.Key}' is off until switched on (livepatch key PID {site.Key} on)", site.Address, site.Key));
        }
        return choices;
    }

    // The whole instruction the lock prefix belongs to, so that it reads as "lock incl (%rdi)".
    private static byte[] LockedInstruction(ElfFile file, ulong address)
    {
        var bytes = ReadCode(file, address, 15, exactly: false);
        var decoder = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(bytes), address);
        decoder.Decode(out var instruction);
        return instruction.IsInvalid ? bytes[..1] : bytes[..instruction.Length];
    }

    /// <summary><paramref name="length"/> bytes of the module's file data at <paramref name="address"/>; with
    /// <paramref name="exactly"/> false, as many of them as its segment holds (at least one).</summary>
    private static byte[] ReadCode(ElfFile file, ulong address, int length, bool exactly = true)
    {
        var bytes = file.ReadLoaded(address, length);
        return bytes.Length == length || (!exactly && bytes.Length > 0) ? bytes.ToArray()
            : throw new SiteTableException(SiteTables.AlternativesTable, null, $"0x{address:x}+{length} is not in the module's file data");
    }
}
