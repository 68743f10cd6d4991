using LivePatch.Elf;
using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>
/// A target's executable code by address, prepared before a stop for the stack unwinder: each module's executable
/// mappings with its load bias and its <c>.eh_frame</c> (parsed once per module and kept by <see cref="TargetModule"/>),
/// and the vdso's, read from the process's memory. Code in no entry (JIT code, payloads, trampolines, thunks) has no
/// CFI. Also names addresses for messages (<c>module!function+0xOFFSET</c>), reading a module's symbols only when a
/// message needs them.
/// </summary>
internal sealed class CodeMap
{
    /// <summary>One executable mapping and the CFI of its file; <see cref="Frames"/> null when it could not be read (<see cref="Why"/>).</summary>
    internal sealed record Entry(ulong Start, ulong End, string Name, ulong Bias, CallFrameInfo? Frames, string? Why, TargetModule? Module);

    private readonly Entry[] _entries;
    private readonly Dictionary<Entry, TargetSymbol[]> _functions = [];

    /// <summary>Reads every module's CFI (cached per module) and the vdso's. Before the stop.</summary>
    public CodeMap(TargetProcess target)
    {
        ArgumentNullException.ThrowIfNull(target);
        var entries = new List<Entry>();
        foreach (var module in target.Modules)
        {
            ulong bias;
            CallFrameInfo? frames = null;
            string? why = null;
            try
            {
                bias = module.LoadBias;
            }
            catch (TargetException)
            {
                continue; // a module whose file cannot be read: its code counts as in no module
            }
            try
            {
                frames = module.CallFrames;
            }
            catch (Exception error) when (error is TargetException or ElfFormatException)
            {
                why = $"its .eh_frame could not be read: {error.Message}";
            }
            foreach (var region in module.Regions.Where(r => r.Protection.HasFlag(MemoryProtection.Execute)))
                entries.Add(new Entry(region.Start, region.End, module.Name, bias, frames, why, module));
        }
        if (Vdso(target) is { } vdso)
            entries.Add(vdso);
        entries.Sort((a, b) => a.Start.CompareTo(b.Start));
        _entries = [.. entries];
    }

    /// <summary>The executable mappings known, in address order.</summary>
    public IReadOnlyList<Entry> Entries => _entries;

    /// <summary>The entry holding <paramref name="address"/>, or null (binary search; nothing allocated).</summary>
    public Entry? Find(ulong address) => IndexOf(address) is var index and >= 0 ? _entries[index] : null;

    /// <summary>The index in <see cref="Entries"/> of the entry holding <paramref name="address"/>, or -1.</summary>
    public int IndexOf(ulong address)
    {
        int low = 0, high = _entries.Length - 1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            var entry = _entries[middle];
            if (address < entry.Start)
                high = middle - 1;
            else if (address >= entry.End)
                low = middle + 1;
            else
                return middle;
        }
        return -1;
    }

    /// <summary>
    /// How a message names <paramref name="address"/>: <c>module!function+0xOFFSET</c> from the module's own symbol tables,
    /// <c>module+0xOFFSET</c> (its file address) where no function holds it, or the bare address outside every module.
    /// </summary>
    public string Name(ulong address)
    {
        if (Find(address) is not { } entry)
            return $"0x{address:x}";
        var functions = Functions(entry);
        int low = 0, high = functions.Length - 1, found = -1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            if (functions[middle].Address <= address)
            {
                found = middle;
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }
        // The nearest function below may be a small one inside a larger one's range (a local entry point): look a few back.
        for (var i = found; i >= 0 && i > found - 8; i--)
            if (address - functions[i].Address < functions[i].Size)
                return $"{entry.Name}!{functions[i].Name}+0x{address - functions[i].Address:x}";
        if (found >= 0 && functions[found].Size == 0)
            return $"{entry.Name}!{functions[found].Name}+0x{address - functions[found].Address:x}";
        return $"{entry.Name}+0x{address - entry.Bias:x}";
    }

    // A module's functions by address, read when a message first names an address in it (a refusal, not every stop).
    private TargetSymbol[] Functions(Entry entry)
    {
        if (entry.Module is null)
            return [];
        if (_functions.TryGetValue(entry, out var known))
            return known;
        TargetSymbol[] functions;
        try
        {
            functions = [.. entry.Module.Symbols.Where(s => s.IsFunction && !s.IsNonDefaultVersion).OrderBy(s => s.Address).ThenByDescending(s => s.Size)
                .DistinctBy(s => s.Address)];
        }
        catch (Exception error) when (error is TargetException or ElfFormatException)
        {
            functions = [];
        }
        foreach (var other in _entries.Where(e => e.Module == entry.Module))
            _functions[other] = functions;
        return functions;
    }

    // The vdso is an ELF image in memory only (clock_gettime runs there): its .eh_frame is read from the process.
    private static Entry? Vdso(TargetProcess target)
    {
        try
        {
            var region = target.ReadMemoryMap().Regions.FirstOrDefault(r => r.Path == "[vdso]");
            if (region.End <= region.Start)
                return null;
            var elf = ElfFile.Parse(target.ReadMemory(region.Start, (int)(region.End - region.Start)));
            var first = elf.LoadSegments.Count == 0 ? 0 : elf.LoadSegments[0].VirtualAddress & ~0xfffUL;
            var bias = region.Start - first;
            return new Entry(region.Start, region.End, "[vdso]", bias, CallFrameInfo.Read(elf), null, null);
        }
        catch (Exception error) when (error is TargetException or ElfFormatException)
        {
            return null; // its frames count as in no module: scanned conservatively
        }
    }
}
