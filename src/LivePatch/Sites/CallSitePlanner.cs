using System.Buffers.Binary;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>A backend's decision for one call site: the bytes it holds as built, the bytes it should hold, and why.</summary>
/// <param name="Site">The site as recorded (link-time addresses).</param>
/// <param name="Address">Where the site is: in the process, or in the file.</param>
/// <param name="Original">The site as built: NOPs and the indirect call.</param>
/// <param name="Chosen">The site as the backend wants it (equal to <paramref name="Original"/> when it leaves it alone).</param>
/// <param name="Reason">Why, in a few words.</param>
/// <param name="SlotValue">The slot's value the choice was made for; null when it is known only at run time.</param>
internal sealed record CallSiteDecision(CallSite Site, ulong Address, byte[] Original, byte[] Chosen, string Reason, ulong? SlotValue = null)
{
    public bool Changes => !Original.AsSpan().SequenceEqual(Chosen);
}

/// <summary>Where call sites are decided: the function a slot holds, what that function is, and the sites' bytes as built.</summary>
internal abstract class CallSiteView(ElfFile file)
{
    /// <summary>The module's file.</summary>
    public ElfFile File => file;

    /// <summary>What to add to a link-time address of the module to get where it is.</summary>
    public abstract ulong Bias { get; }

    /// <summary>The value of the slot at <paramref name="slot"/> (link-time address), or null with the reason it is known only at run time.</summary>
    public abstract ulong? ReadSlot(ulong slot, out string unknown);

    /// <summary>The symbol, clobbers and no-op-ness of the function at <paramref name="function"/> (an address as <see cref="ReadSlot"/> gives it).</summary>
    public abstract (string? Name, GeneralRegisters Clobbers, bool IsNoOp) Describe(ulong function);

    /// <summary>The site's bytes as built, from the file.</summary>
    public byte[] Original(CallSite site) => CodeAt(site.Address, site.Length)!;

    /// <summary><paramref name="length"/> bytes of the file's code at <paramref name="address"/> (link-time), as many as there are up to that, or null.</summary>
    protected byte[]? CodeAt(ulong address, int length) => file.ReadLoaded(address, length, executableOnly: true) is { Length: > 0 } code ? code.ToArray() : null;

    /// <summary>True for <c>ret</c>, <c>rep ret</c> and <c>endbr64; ret</c>.</summary>
    protected static bool IsNoOp(byte[]? code)
    {
        if (code is null || code.Length == 0)
            return false;
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), 0);
        decoder.Decode(out var first);
        if (first.Code == Code.Endbr64)
            decoder.Decode(out first);
        return first.Code == Code.Retnq;
    }
}

/// <summary>Call sites decided from a module's file alone (<c>livepatch sites FILE</c>): slots as the file initialises them.</summary>
internal sealed class FileCallSiteView(ElfFile file, SiteTables tables) : CallSiteView(file)
{
    // The loader's relocations (.rela.dyn is allocated; relocations kept by ld --emit-relocs are not).
    private readonly Dictionary<ulong, ElfRelocation> _dynamic = file.RelocationSections.Where(r => r.Section.Flags.HasFlag(ElfSectionAttributes.Alloc))
        .SelectMany(r => r.Relocations).GroupBy(r => r.Offset).ToDictionary(g => g.Key, g => g.First());

    public override ulong Bias => 0;

    public override ulong? ReadSlot(ulong slot, out string unknown)
    {
        unknown = "";
        if (_dynamic.TryGetValue(slot, out var relocation))
        {
            // A PIE or shared object holds its own functions' addresses as B + A: A is the link-time address.
            if (relocation.Type == ElfRelocationType.Relative)
                return (ulong)relocation.Addend;
            unknown = relocation.SymbolName.Length > 0
                ? $"the loader fills the slot with {relocation.SymbolName} ({relocation.TypeName})"
                : $"the loader fills the slot ({relocation.TypeName})";
            return null;
        }
        foreach (var segment in File.LoadSegments)
        {
            if (slot < segment.VirtualAddress || slot + 8 > segment.VirtualAddress + segment.MemorySize)
                continue;
            if (slot + 8 > segment.VirtualAddress + segment.FileSize)
            {
                unknown = "the slot is zero-initialised (.bss): the program sets it";
                return null;
            }
            return BinaryPrimitives.ReadUInt64LittleEndian(File.GetSegmentData(segment).Span[(int)(slot - segment.VirtualAddress)..]);
        }
        unknown = "the slot is not in the module's data";
        return null;
    }

    public override (string? Name, GeneralRegisters Clobbers, bool IsNoOp) Describe(ulong function)
    {
        var symbol = File.Symbols.Concat(File.DynamicSymbols).Where(s => s.Value == function && s.Name.Length > 0
            && s.Type is ElfSymbolType.Function or ElfSymbolType.NoType && s.SectionIndex is not (ElfSymbol.UndefinedSection or ElfSymbol.AbsoluteSection))
            .OrderBy(s => s.Name.StartsWith('_')).ThenBy(s => s.Binding == ElfSymbolBinding.Local).FirstOrDefault();
        return (symbol.Name is { Length: > 0 } name ? name : null, tables.ClobbersOf(function), IsNoOp(CodeAt(function, 8)));
    }
}

/// <summary>Call sites of a module mapped in a running process: slots and functions read from its memory now.</summary>
internal sealed class ProcessCallSiteView(TargetProcess target, TargetModule module) : CallSiteView(module.Elf)
{
    private readonly Dictionary<TargetModule, SiteTables> _tables = [];
    private MemoryMap? _map;

    public override ulong Bias => module.LoadBias;

    public override ulong? ReadSlot(ulong slot, out string unknown)
    {
        unknown = "";
        return BinaryPrimitives.ReadUInt64LittleEndian(target.ReadMemory(slot + Bias, 8));
    }

    public override (string? Name, GeneralRegisters Clobbers, bool IsNoOp) Describe(ulong function)
    {
        _map ??= target.ReadMemoryMap();
        var region = _map.Find(function);
        var code = region is { } mapped ? target.ReadMemory(function, (int)Math.Min(8, mapped.End - function)) : null;
        var owner = target.Modules.FirstOrDefault(m => m.Regions.Any(r => r.Contains(function)));
        if (owner is null)
            return (null, GeneralRegisters.CallerSaved, IsNoOp(code));
        var symbol = owner.Symbols.Where(s => s.Address == function && s.Type is ElfSymbolType.Function or ElfSymbolType.NoType or ElfSymbolType.GnuIndirectFunction)
            .OrderBy(s => s.Name.StartsWith('_')).ThenBy(s => s.Binding == ElfSymbolBinding.Local).ThenBy(s => s.IsDynamic).FirstOrDefault(); // getpid, not its alias __getpid
        if (!_tables.TryGetValue(owner, out var tables))
            _tables[owner] = tables = SiteTables.Read(owner.Elf);
        return (symbol?.Name, tables.ClobbersOf(function - owner.LoadBias), IsNoOp(code));
    }
}

/// <summary>Runs a backend over a module's call sites and checks what it wrote.</summary>
internal static class CallSitePlanner
{
    public static List<CallSiteDecision> Decide(CallSiteView view, IReadOnlyList<CallSite> sites, CallSiteBackend backend)
    {
        var decisions = new List<CallSiteDecision>(sites.Count);
        foreach (var site in sites)
            decisions.Add(Decide(view, site, backend));
        return decisions;
    }

    private static CallSiteDecision Decide(CallSiteView view, CallSite site, CallSiteBackend backend)
    {
        var address = site.Address + view.Bias;
        var original = view.Original(site);
        if (view.ReadSlot(site.Slot, out var unknown) is not { } function)
            return new CallSiteDecision(site, address, original, original, $"decided at run time: {unknown}");
        var (name, clobbers, isNoOp) = function == 0 ? (null, GeneralRegisters.None, false) : view.Describe(function);
        var patch = new CallSitePatch
        {
            Address = address,
            Length = site.Length,
            Type = site.Type,
            Name = site.Name,
            Clobbers = site.Clobbers,
            SlotAddress = site.Slot + view.Bias,
            IsTail = site.IsTail,
            Function = function,
            FunctionName = name,
            FunctionClobbers = clobbers,
            FunctionIsNoOp = isNoOp,
        };
        var buffer = new PatchBuffer(address, site.Length);
        var used = backend.Patch(patch, buffer);
        if (used == CallSiteBackend.Unchanged)
            return new CallSiteDecision(site, address, original, original, patch.Reason ?? $"{backend} leaves it as the indirect call", function);
        if (used < 0 || used != buffer.Length)
            throw new InvalidOperationException(
                $"call-site backend {backend} returned {used} for site '{site.Name}' at 0x{address:x} but wrote {buffer.Length} of its {site.Length} bytes");
        buffer.Fill();
        var chosen = buffer.Bytes.ToArray();
        if (CallNotAtEnd(chosen, address) is { } misplaced)
            throw new InvalidOperationException(
                $"call-site backend {backend} wrote {misplaced} in site '{site.Name}' at 0x{address:x}: a call must end at the end of the site, where threads inside the called function return");
        return new CallSiteDecision(site, address, original, chosen, patch.Reason ?? $"{backend}: {used} bytes", function);
    }

    /// <summary>
    /// The first thing that breaks the call-site rule in <paramref name="code"/>: bytes that are not whole instructions,
    /// or a call that does not end at the end of the site. Null when the code keeps it.
    /// </summary>
    internal static string? CallNotAtEnd(byte[] code, ulong address)
    {
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), address);
        var end = address + (ulong)code.Length;
        while (decoder.IP < end)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
                return $"bytes that are not whole instructions at +{instruction.IP - address}";
            if (instruction.FlowControl is FlowControl.Call or FlowControl.IndirectCall && instruction.NextIP != end)
                return $"a call at +{instruction.IP - address} ending at +{instruction.NextIP - address} of {code.Length}";
        }
        return null;
    }
}
