using LivePatch.Elf;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// Finds the copies of a payload's old functions that the jump at their entries does not reach — gcc's clones
/// (<c>.isra</c>, <c>.constprop</c>, <c>.part</c>), other names of the same body, and copies inlined into other
/// functions (from the module's DWARF, when it has some) — and refuses the payload when it leaves one running old code
/// (or changes another name), unless it replaces that copy too or <see cref="LivePatchOptions.AllowClones"/> says so.
/// </summary>
internal sealed class CloneFinder(LiveSession session)
{
    private int Pid => session.Pid;

    /// <summary>The copies of <paramref name="replaced"/>; refuses those missed unless allowed.</summary>
    /// <exception cref="PatchRefusedException">A copy is missed and clones are not allowed, or the payload replaces two names of one body.</exception>
    public IReadOnlyList<FunctionCopy> Require(string payload, IReadOnlyList<TargetSymbol> replaced)
    {
        var scan = Scan(payload, replaced);
        RefuseMissed(payload, scan.Copies);
        return scan.Copies;
    }

    /// <summary>What <see cref="Require"/> checks, as one line per replaced function.</summary>
    /// <exception cref="PatchRefusedException">As <see cref="Require"/>.</exception>
    public List<CheckResult> Check(string payload, IReadOnlyList<TargetSymbol> replaced)
    {
        var scan = Scan(payload, replaced);
        RefuseMissed(payload, scan.Copies);
        var results = new List<CheckResult>();
        foreach (var symbol in replaced)
        {
            var name = NameOf(symbol);
            var copies = scan.Copies.Where(c => c.Function == name).ToList();
            var found = copies.Count == 0
                ? "no clone or alias in its symbols"
                : string.Join("; ", copies.Select(c => $"{Without(c.Describe(), name)}: {c.Consequence()}{(c.IsMissed ? ", allowed (--allow-clones)" : "")}"));
            results.Add(new CheckResult($"copies of {name}", $"{found}; {scan.Dwarf[symbol.Module]}"));
        }
        return results;
    }

    private sealed record CopyScan(List<FunctionCopy> Copies, Dictionary<TargetModule, string> Dwarf);

    private CopyScan Scan(string payload, IReadOnlyList<TargetSymbol> replaced)
    {
        RefuseOneBodyTwice(payload, replaced);
        var copies = new List<FunctionCopy>();
        var dwarf = new Dictionary<TargetModule, string>();
        foreach (var module in replaced.Select(s => s.Module).Distinct())
        {
            var mine = replaced.Where(s => s.Module == module).ToList();
            // A stripped module's clones and aliases are named by its debug file (or MiniDebugInfo), when it has one.
            var symbols = module.IsStripped ? [.. module.Symbols, .. module.DebugSymbols] : module.Symbols;
            var functions = symbols.Where(s => s.IsFunction && !s.IsNonDefaultVersion).ToList();
            var replacedAt = mine.Select(s => s.Address).ToHashSet();
            foreach (var symbol in mine)
            {
                copies.AddRange(ClonesOf(symbol, functions, replacedAt));
                copies.AddRange(AliasesOf(symbol, functions));
            }
            dwarf[module] = InlinedCopies(module, mine, functions, replacedAt, copies);
        }
        return new CopyScan(copies, dwarf);
    }

    // Every other symbol made from the same source function: gcc's clones of it, or the function a replaced clone came from.
    private static IEnumerable<FunctionCopy> ClonesOf(TargetSymbol symbol, List<TargetSymbol> functions, HashSet<ulong> replacedAt)
    {
        var source = CloneNames.Source(symbol.Name);
        var family = functions.Where(f => f.Address != symbol.Address && CloneNames.Classify(f.Name) is var (from, kind)
            && from == source && kind != CloneNameKind.LocalAlias);
        foreach (var copy in family.DistinctBy(f => f.Address))
        {
            var split = CloneNames.Classify(copy.Name).Kind == CloneNameKind.SplitPart;
            var replaced = split
                ? functions.Any(f => f.Name == CloneNames.Owner(copy.Name) && replacedAt.Contains(f.Address))
                : replacedAt.Contains(copy.Address);
            yield return new FunctionCopy(NameOf(symbol), split ? FunctionCopyKind.SplitPart : FunctionCopyKind.Clone, NameOf(copy), copy.Address, replaced);
        }
    }

    // Other names at the same address, leaving out those of the same function: name@VER, gcc's name.localalias.
    private static IEnumerable<FunctionCopy> AliasesOf(TargetSymbol symbol, List<TargetSymbol> functions)
    {
        var bare = Unversioned(symbol.Name);
        return functions
            .Where(f => f.Address == symbol.Address && Unversioned(f.Name) != bare
                && !(CloneNames.Classify(f.Name) is (var from, CloneNameKind.LocalAlias) && from == bare)
                && !(CloneNames.Classify(bare) is (var mine, CloneNameKind.LocalAlias) && mine == Unversioned(f.Name)))
            .OrderBy(f => f.Name.Length)
            .DistinctBy(f => CloneNames.Source(Unversioned(f.Name)))
            .Select(f => new FunctionCopy(NameOf(symbol), FunctionCopyKind.Alias, NameOf(f), f.Address, Replaced: false));
    }

    // Copies DWARF says were inlined, each named by the function holding it; returns what was read, for check.
    private static string InlinedCopies(TargetModule module, List<TargetSymbol> mine, List<TargetSymbol> functions, HashSet<ulong> replacedAt, List<FunctionCopy> copies)
    {
        var sources = mine.ToLookup(s => CloneNames.Source(s.Name));
        DwarfInlineScan? scan;
        try
        {
            scan = DwarfInlines.Find(module.Elf, sources.Select(s => s.Key).ToHashSet());
        }
        catch (ElfFormatException error)
        {
            return $"the DWARF of {module.Name} is unreadable ({error.Message}): inlined copies not looked for";
        }
        if (scan is null)
            return $"no DWARF in {module.Name}{(module.Elf.FindSection(".gnu_debuglink") is null ? "" : " (its .gnu_debuglink names a separate debug file, not read)")}: inlined copies not looked for";
        var found = 0;
        foreach (var group in scan.Copies.GroupBy(c => (c.Function, Holder: Holder(c, module, functions))))
        {
            var (function, holder) = group.Key;
            // Inlined into one of its own copies (recursion, a clone): counted as that copy.
            if (holder is not null && CloneNames.Source(holder.Name) == function)
                continue;
            var address = group.First().Address;
            var replaced = holder is not null && (replacedAt.Contains(holder.Address)
                || (CloneNames.Classify(holder.Name).Kind == CloneNameKind.SplitPart && functions.Any(f => f.Name == CloneNames.Owner(holder.Name) && replacedAt.Contains(f.Address))));
            copies.Add(new FunctionCopy(NameOf(sources[function].First()), FunctionCopyKind.Inlined, holder is null ? null : NameOf(holder),
                address == 0 ? 0 : address + module.LoadBias, replaced));
            found++;
        }
        var split = scan.SplitUnits ? " (split DWARF: the .dwo files were not read)" : "";
        return $"DWARF {scan.Version} of {module.Name} read{split}: {(found == 0 ? "no inlined copy" : $"{found} function(s) hold inlined copies")}";
    }

    // The function symbol whose code holds an inlined copy (its own size tells), or null.
    private static TargetSymbol? Holder(DwarfInlinedCopy copy, TargetModule module, List<TargetSymbol> functions)
    {
        if (copy.Address == 0)
            return null;
        var address = copy.Address + module.LoadBias;
        return functions.FirstOrDefault(f => f.Size > 0 && address >= f.Address && address - f.Address < f.Size);
    }

    // One entry jump cannot lead to two new functions.
    private void RefuseOneBodyTwice(string payload, IReadOnlyList<TargetSymbol> replaced)
    {
        foreach (var body in replaced.GroupBy(s => (s.Module, s.Address)).Where(g => g.Count() > 1))
            throw new PatchRefusedException(LivePatchRefusal.ClonesNotReplaced,
                $"payload '{payload}' replaces {string.Join(" and ", body.Select(NameOf).Order(StringComparer.Ordinal))}, names of one body at 0x{body.Key.Address:x} in process {Pid}: one jump cannot lead to two new functions; replace one name (--allow-clones accepts that the others change with it)");
    }

    private void RefuseMissed(string payload, List<FunctionCopy> copies)
    {
        var missed = copies.Where(c => c.IsMissed).ToList();
        if (missed.Count == 0 || session.Options.AllowClones)
            return;
        var what = new List<string>();
        if (missed.Any(c => c.Kind == FunctionCopyKind.Clone))
            what.Add($"replace the clones too (LIVEPATCH_REPLACE(\"{Bare(missed.First(c => c.Kind == FunctionCopyKind.Clone).Copy!)}\", ...), each with its own calling convention)");
        if (missed.Any(c => c.Kind == FunctionCopyKind.Inlined))
            what.Add("replace the functions holding inlined copies");
        throw new PatchRefusedException(LivePatchRefusal.ClonesNotReplaced,
            $"payload '{payload}' does not cover every copy of the code it replaces in process {Pid}: {string.Join("; ", missed.Select(c => $"{c.Describe()}, {c.Consequence()}"))}; "
            + (what.Count == 0 ? "pass --allow-clones if that is intended" : $"{string.Join(", ", what)}, or pass --allow-clones to patch anyway"));
    }

    private static string NameOf(TargetSymbol symbol) => symbol.QualifiedName;

    private static string Bare(string qualified) => qualified[(qualified.LastIndexOf('!') + 1)..];

    private static string Unversioned(string name) => name.IndexOf('@', StringComparison.Ordinal) is var at and > 0 ? name[..at] : name;

    // "app!f has clone ..." reads as "has clone ..." on f's own check line.
    private static string Without(string phrase, string function) =>
        phrase.StartsWith(function + " ", StringComparison.Ordinal) ? phrase[(function.Length + 1)..] : phrase;
}
