using LivePatch.Elf;

namespace LivePatch.Payloads;

/// <summary>The three memory regions a payload is placed in; each is allocated separately in the target.</summary>
internal enum PayloadRegionKind
{
    /// <summary>Executable: code sections and jump-slot stubs.</summary>
    Text,

    /// <summary>Read-only after linking: constants, string literals and the payload's GOT (slots included).</summary>
    ReadOnly,

    /// <summary>Writable: data sections, <c>.bss</c> and common symbols, zero-filled where the file has no bytes.</summary>
    Data,
}

/// <summary>Where something lies: a region and an offset from the region's start.</summary>
internal readonly record struct PayloadPlacement(PayloadRegionKind Region, ulong Offset);

/// <summary>The size and alignment of one region, which the caller allocates before linking.</summary>
internal readonly record struct PayloadRegionSize(ulong Size, ulong Alignment);

/// <summary>
/// Where every loaded section, common symbol, GOT slot and jump-slot stub of a payload goes, relative to
/// its region; computed from the object alone so that the regions can be allocated before linking.
/// </summary>
internal sealed class PayloadLayout
{
    /// <summary>Bytes of one stub (<c>jmp *slot(%rip)</c> is 6; the rest is padding).</summary>
    public const int StubSize = 8;

    /// <summary>Bytes of one GOT slot.</summary>
    public const int SlotSize = 8;

    /// <summary>The largest region a payload may need (256 MiB): anything bigger is a corrupt size field.</summary>
    public const ulong MaxRegionSize = 1UL << 28;

    private PayloadLayout(
        Payload payload, PayloadRegionSize[] regions, Dictionary<int, PayloadPlacement> sections,
        Dictionary<int, ulong> commonSymbols, Dictionary<int, ulong> slots, Dictionary<int, ulong> stubs)
    {
        Payload = payload;
        Text = regions[(int)PayloadRegionKind.Text];
        ReadOnly = regions[(int)PayloadRegionKind.ReadOnly];
        Data = regions[(int)PayloadRegionKind.Data];
        Sections = sections;
        CommonSymbols = commonSymbols;
        Slots = slots;
        Stubs = stubs;
    }

    /// <summary>The payload laid out.</summary>
    public Payload Payload { get; }

    /// <summary>Size and alignment of the executable region.</summary>
    public PayloadRegionSize Text { get; }

    /// <summary>Size and alignment of the read-only region.</summary>
    public PayloadRegionSize ReadOnly { get; }

    /// <summary>Size and alignment of the writable region.</summary>
    public PayloadRegionSize Data { get; }

    /// <summary>Placement of each loaded section, by section index.</summary>
    public IReadOnlyDictionary<int, PayloadPlacement> Sections { get; }

    /// <summary>Offset in the data region of each <c>SHN_COMMON</c> symbol, by symbol index.</summary>
    public IReadOnlyDictionary<int, ulong> CommonSymbols { get; }

    /// <summary>Offset in the read-only region of the GOT slot of each symbol that needs one, by symbol index.</summary>
    public IReadOnlyDictionary<int, ulong> Slots { get; }

    /// <summary>Offset in the text region of the stub of each undefined symbol called by rel32, by symbol index; its slot is in <see cref="Slots"/>.</summary>
    public IReadOnlyDictionary<int, ulong> Stubs { get; }

    /// <summary>Returns the size and alignment of one region.</summary>
    public PayloadRegionSize this[PayloadRegionKind region] => region switch
    {
        PayloadRegionKind.Text => Text,
        PayloadRegionKind.ReadOnly => ReadOnly,
        _ => Data,
    };

    /// <summary>Places the payload's sections and reserves its GOT slots and stubs.</summary>
    /// <exception cref="PayloadException">The regions would be larger than a payload may use.</exception>
    public static PayloadLayout Compute(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        var elf = payload.Elf;
        var loaded = LoadedSections(payload);
        var slotSymbols = new List<int>();
        var stubSymbols = new List<int>();
        foreach (var (section, relocation) in PlacedRelocations(payload, loaded))
        {
            if (IsGotRelative(relocation.Type) && !slotSymbols.Contains((int)relocation.SymbolIndex))
            {
                slotSymbols.Add((int)relocation.SymbolIndex);
            }

            if (relocation.Symbol.SectionIndex == ElfSymbol.UndefinedSection && relocation.SymbolIndex != 0
                && IsCall(elf, section, relocation) && !stubSymbols.Contains((int)relocation.SymbolIndex))
            {
                stubSymbols.Add((int)relocation.SymbolIndex);
            }
        }

        var ends = new ulong[3];
        var alignments = new ulong[] { 1, 1, 1 };
        var sections = new Dictionary<int, PayloadPlacement>();
        foreach (var section in loaded)
        {
            var region = RegionOf(section);
            sections.Add(section.Index, new PayloadPlacement(region, Reserve(ends, alignments, region, section.Size, section.Alignment)));
        }

        var stubs = new Dictionary<int, ulong>();
        foreach (var symbol in stubSymbols)
        {
            stubs.Add(symbol, Reserve(ends, alignments, PayloadRegionKind.Text, StubSize, StubSize));
            if (!slotSymbols.Contains(symbol))
            {
                slotSymbols.Add(symbol);
            }
        }

        var slots = new Dictionary<int, ulong>();
        foreach (var symbol in slotSymbols)
        {
            slots.Add(symbol, Reserve(ends, alignments, PayloadRegionKind.ReadOnly, SlotSize, SlotSize));
        }

        var commons = new Dictionary<int, ulong>();
        foreach (var symbol in elf.Symbols)
        {
            if (symbol.SectionIndex == ElfSymbol.CommonSection)
            {
                // For a common symbol st_value holds the alignment.
                commons.Add(symbol.Index, Reserve(ends, alignments, PayloadRegionKind.Data, symbol.Size, symbol.Value));
            }
        }

        var regions = new PayloadRegionSize[3];
        for (var i = 0; i < regions.Length; i++)
        {
            if (ends[i] > MaxRegionSize)
            {
                throw new PayloadException(payload.File, $"the {(PayloadRegionKind)i} region would need 0x{ends[i]:x} bytes, more than the 0x{MaxRegionSize:x} a payload may use");
            }

            regions[i] = new PayloadRegionSize(ends[i], alignments[i]);
        }

        return new PayloadLayout(payload, regions, sections, commons, slots, stubs);
    }

    /// <summary>The sections that occupy memory in the target, in section order.</summary>
    internal static List<ElfSection> LoadedSections(Payload payload) => [.. payload.Elf.Sections.Where(IsLoaded)];

    /// <summary>True for a section placed in the target: <c>SHF_ALLOC</c>, except the records, notes, <c>.eh_frame</c> and <c>.comment</c>.</summary>
    internal static bool IsLoaded(ElfSection section) =>
        section.Flags.HasFlag(ElfSectionAttributes.Alloc)
        && !section.Name.StartsWith(".livepatch.", StringComparison.Ordinal)
        && !section.Name.StartsWith(".note", StringComparison.Ordinal)
        && section.Name is not ".eh_frame" and not ".comment";

    /// <summary>Every relocation that applies to a loaded section, with that section.</summary>
    internal static IEnumerable<(ElfSection Section, ElfRelocation Relocation)> PlacedRelocations(Payload payload, List<ElfSection> loaded)
    {
        foreach (var relocationSection in payload.Elf.RelocationSections)
        {
            var target = relocationSection.TargetSection;
            if (target == null || !loaded.Contains(target))
            {
                continue;
            }

            foreach (var relocation in relocationSection.Relocations)
            {
                yield return (target, relocation);
            }
        }
    }

    /// <summary>True for the relocations that read a GOT slot: GOTPCREL, GOTPCRELX, REX_GOTPCRELX.</summary>
    internal static bool IsGotRelative(ElfRelocationType type) =>
        type is ElfRelocationType.GotPcRel or ElfRelocationType.GotPcRelX or ElfRelocationType.RexGotPcRelX;

    /// <summary>
    /// True when the relocation is the rel32 of a branch that a stub may stand in for: any PLT32, or a
    /// PC32 right after a <c>call</c>, <c>jmp</c> or <c>jcc</c> opcode in code (a RIP-relative ModRM is never one of those bytes).
    /// </summary>
    internal static bool IsCall(ElfFile elf, ElfSection section, ElfRelocation relocation)
    {
        if (relocation.Type == ElfRelocationType.Plt32)
        {
            return true;
        }

        if (relocation.Type != ElfRelocationType.Pc32 || !section.Flags.HasFlag(ElfSectionAttributes.ExecInstr) || relocation.Offset < 1)
        {
            return false;
        }

        var code = elf.GetSectionData(section).Span;
        var offset = (int)relocation.Offset;
        var opcode = code[offset - 1];
        return opcode is 0xe8 or 0xe9 || (offset >= 2 && code[offset - 2] == 0x0f && opcode is >= 0x80 and <= 0x8f);
    }

    /// <summary>Refuses relocation types the linker does not implement, naming the type, the section and the offset, and relocations outside their section.</summary>
    internal static void RequireSupported(string file, ElfSection section, ElfRelocation relocation)
    {
        var supported = relocation.Type is ElfRelocationType.None or ElfRelocationType.Direct64 or ElfRelocationType.Pc32
            or ElfRelocationType.Plt32 or ElfRelocationType.Direct32 or ElfRelocationType.Direct32Signed
            || IsGotRelative(relocation.Type);
        var width = relocation.Type == ElfRelocationType.Direct64 ? 8UL : 4UL;
        if (!supported)
        {
            throw new PayloadException(file,
                $"unsupported relocation {relocation.TypeName} at {section.Name}+0x{relocation.Offset:x} (against '{relocation.SymbolName}')");
        }

        if (relocation.Type != ElfRelocationType.None && (relocation.Offset > section.Size || section.Size - relocation.Offset < width))
        {
            throw new PayloadException(file,
                $"relocation {relocation.TypeName} at {section.Name}+0x{relocation.Offset:x} (r_offset) lies outside its section (size 0x{section.Size:x})");
        }
    }

    private static PayloadRegionKind RegionOf(ElfSection section) =>
        section.Flags.HasFlag(ElfSectionAttributes.ExecInstr) ? PayloadRegionKind.Text
        : section.Flags.HasFlag(ElfSectionAttributes.Write) ? PayloadRegionKind.Data
        : PayloadRegionKind.ReadOnly;

    private static ulong Reserve(ulong[] ends, ulong[] alignments, PayloadRegionKind region, ulong size, ulong alignment)
    {
        // Loading validated sizes and alignments (PayloadValidator): powers of two up to a page, sizes up to MaxRegionSize.
        alignment = Math.Max(alignment, 1);
        var offset = (ends[(int)region] + alignment - 1) / alignment * alignment;
        ends[(int)region] = offset + size;
        alignments[(int)region] = Math.Max(alignments[(int)region], alignment);
        return offset;
    }
}
