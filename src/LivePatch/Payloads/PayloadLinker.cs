using System.Buffers.Binary;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.X86;

namespace LivePatch.Payloads;

/// <summary>
/// Links a laid-out payload for the addresses its regions were given in the target: copies sections,
/// resolves symbols (the payload's own, then the target's), fills GOT slots and stubs, applies relocations.
/// </summary>
internal sealed class PayloadLinker
{
    private readonly Payload _payload;
    private readonly PayloadLayout _layout;
    private readonly ulong[] _bases;
    private readonly byte[][] _bytes;
    private readonly Func<string, ulong?> _resolveTargetSymbol;
    private readonly Dictionary<string, ulong?> _targetSymbols = new(StringComparer.Ordinal);

    private PayloadLinker(Payload payload, PayloadLayout layout, ulong[] bases, Func<string, ulong?> resolveTargetSymbol)
    {
        _payload = payload;
        _layout = layout;
        _bases = bases;
        _resolveTargetSymbol = resolveTargetSymbol;
        _bytes =
        [
            new byte[layout.Text.Size],
            new byte[layout.ReadOnly.Size],
            new byte[layout.Data.Size],
        ];
        // int3 between functions and stubs: a stray jump traps instead of sliding.
        _bytes[(int)PayloadRegionKind.Text].AsSpan().Fill(0xcc);
    }

    /// <summary>
    /// Links <paramref name="payload"/> placed as <paramref name="layout"/> says at the three region addresses;
    /// undefined symbols are looked up with <paramref name="resolveTargetSymbol"/>, whose own exceptions propagate untouched.
    /// </summary>
    /// <exception cref="PayloadException">A symbol is unknown, a relocation does not fit or is not supported.</exception>
    /// <exception cref="ArgumentException">The layout is not the payload's, or an address is not aligned as the layout requires.</exception>
    public static LinkedPayload Link(
        Payload payload, PayloadLayout layout, ulong textAddress, ulong readOnlyAddress, ulong dataAddress,
        Func<string, ulong?> resolveTargetSymbol)
    {
        ArgumentNullException.ThrowIfNull(payload);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(resolveTargetSymbol);
        if (!ReferenceEquals(layout.Payload, payload))
        {
            throw new ArgumentException($"the layout was computed for payload {layout.Payload.File}, not {payload.File}", nameof(layout));
        }

        RequireAligned(textAddress, layout.Text, nameof(textAddress));
        RequireAligned(readOnlyAddress, layout.ReadOnly, nameof(readOnlyAddress));
        RequireAligned(dataAddress, layout.Data, nameof(dataAddress));
        return new PayloadLinker(payload, layout, [textAddress, readOnlyAddress, dataAddress], resolveTargetSymbol).Link();
    }

    private LinkedPayload Link()
    {
        CopySections();
        WriteStubs();
        ApplyRelocations();
        var functions = _payload.Functions.Select(f => new LinkedFunction(f, AddressOfDefined(f.Symbol))).ToArray();
        return new LinkedPayload(
            _payload,
            Region(PayloadRegionKind.Text), Region(PayloadRegionKind.ReadOnly), Region(PayloadRegionKind.Data),
            functions, AddressOfDefined);
    }

    private LinkedRegion Region(PayloadRegionKind region) => new(_bases[(int)region], _bytes[(int)region]);

    private ulong AddressOf(PayloadPlacement placement) => _bases[(int)placement.Region] + placement.Offset;

    private Span<byte> BytesAt(PayloadPlacement placement, int length) =>
        _bytes[(int)placement.Region].AsSpan((int)placement.Offset, length);

    private void CopySections()
    {
        foreach (var (index, placement) in _layout.Sections)
        {
            var data = _payload.Elf.GetSectionData(_payload.Elf.Sections[index]).Span;
            data.CopyTo(BytesAt(placement, data.Length));
        }
    }

    private void WriteStubs()
    {
        foreach (var (symbol, offset) in _layout.Stubs)
        {
            var stub = new PayloadPlacement(PayloadRegionKind.Text, offset);
            var slot = AddressOf(new PayloadPlacement(PayloadRegionKind.ReadOnly, _layout.Slots[symbol]));
            var buffer = new PatchBuffer(AddressOf(stub), PayloadLayout.StubSize);
            try
            {
                buffer.WriteInstructions([Instruction.Create(Code.Jmp_rm64, new MemoryOperand(Register.RIP, (long)slot))]);
            }
            catch (RelocationException error)
            {
                throw new PayloadException(_payload.File,
                    $"the stub for '{_payload.Elf.Symbols[symbol].Name}' at 0x{buffer.Address:x} cannot reach its slot at 0x{slot:x}: allocate the text and read-only regions within 2 GiB of each other", error);
            }

            buffer.Fill();
            buffer.Bytes.CopyTo(BytesAt(stub, PayloadLayout.StubSize));
        }
    }

    private void ApplyRelocations()
    {
        foreach (var (section, relocation) in PayloadLayout.PlacedRelocations(_payload, PayloadLayout.LoadedSections(_payload)))
        {
            PayloadLayout.RequireSupported(_payload.File, section, relocation);
            if (relocation.Type == ElfRelocationType.None)
            {
                continue;
            }

            var where = $"{section.Name}+0x{relocation.Offset:x}";
            var site = _layout.Sections[section.Index] with { Offset = _layout.Sections[section.Index].Offset + relocation.Offset };
            var place = AddressOf(site);
            var symbolAddress = SymbolAddress(relocation, where);
            var value = symbolAddress + (ulong)relocation.Addend;
            switch (relocation.Type)
            {
                case ElfRelocationType.Direct64:
                    BinaryPrimitives.WriteUInt64LittleEndian(BytesAt(site, 8), value);
                    break;
                case ElfRelocationType.Direct32:
                    WriteInt32(site, value <= uint.MaxValue ? (int)(uint)value : null, relocation, where, symbolAddress, place);
                    break;
                case ElfRelocationType.Direct32Signed:
                    WriteInt32(site, FitsInt32(value) ? (int)(long)value : null, relocation, where, symbolAddress, place);
                    break;
                case ElfRelocationType.Pc32:
                case ElfRelocationType.Plt32:
                    WriteBranchOrPcRelative(site, value - place, relocation, section, where, symbolAddress, place);
                    break;
                default:
                    var slot = FillSlot(relocation, symbolAddress);
                    var displacement = slot + (ulong)relocation.Addend - place;
                    WriteInt32(site, FitsInt32(displacement) ? (int)(long)displacement : null, relocation, where, slot, place);
                    break;
            }
        }
    }

    private void WriteBranchOrPcRelative(
        PayloadPlacement site, ulong displacement, ElfRelocation relocation, ElfSection section, string where, ulong symbolAddress, ulong place)
    {
        var viaStub = _layout.Stubs.TryGetValue((int)relocation.SymbolIndex, out var stubOffset)
            && PayloadLayout.IsCall(_payload.Elf, section, relocation);
        if (viaStub)
        {
            // Filled even when the call reaches directly, so that every stub is valid.
            FillSlot(relocation, symbolAddress);
        }

        if (viaStub && !FitsInt32(displacement))
        {
            var stub = AddressOf(new PayloadPlacement(PayloadRegionKind.Text, stubOffset));
            displacement = stub + (ulong)relocation.Addend - place;
            symbolAddress = stub;
        }

        WriteInt32(site, FitsInt32(displacement) ? (int)(long)displacement : null, relocation, where, symbolAddress, place);
    }

    private ulong FillSlot(ElfRelocation relocation, ulong symbolAddress)
    {
        var slot = new PayloadPlacement(PayloadRegionKind.ReadOnly, _layout.Slots[(int)relocation.SymbolIndex]);
        BinaryPrimitives.WriteUInt64LittleEndian(BytesAt(slot, PayloadLayout.SlotSize), symbolAddress);
        return AddressOf(slot);
    }

    private void WriteInt32(PayloadPlacement site, int? value, ElfRelocation relocation, string where, ulong target, ulong place)
    {
        if (value == null)
        {
            throw new PayloadException(_payload.File,
                $"relocation {relocation.TypeName} at {where} (0x{place:x}) against '{relocation.SymbolName}' (0x{target:x}) does not fit in 32 bits: the target is out of reach");
        }

        BinaryPrimitives.WriteInt32LittleEndian(BytesAt(site, 4), value.Value);
    }

    private ulong SymbolAddress(ElfRelocation relocation, string where)
    {
        var symbol = relocation.Symbol;
        if (relocation.SymbolIndex == 0)
        {
            return 0;
        }

        switch (symbol.SectionIndex)
        {
            case ElfSymbol.UndefinedSection:
                return TargetSymbolAddress(symbol, where);
            case ElfSymbol.AbsoluteSection:
                return symbol.Value;
            case ElfSymbol.CommonSection:
                return _bases[(int)PayloadRegionKind.Data] + _layout.CommonSymbols[symbol.Index];
            default:
                if (!_layout.Sections.TryGetValue((int)symbol.SectionIndex, out var placement))
                {
                    throw new PayloadException(_payload.File,
                        $"'{relocation.SymbolName}' referenced from {where} lies in {_payload.Elf.Sections[(int)symbol.SectionIndex].Name}, which is not loaded");
                }

                return AddressOf(placement) + (symbol.Type == ElfSymbolType.Section ? 0UL : symbol.Value);
        }
    }

    private ulong TargetSymbolAddress(ElfSymbol symbol, string where)
    {
        if (!_targetSymbols.TryGetValue(symbol.Name, out var address))
        {
            address = _resolveTargetSymbol(symbol.Name);
            _targetSymbols.Add(symbol.Name, address);
        }

        if (address is { } found)
        {
            return found;
        }

        return symbol.Binding == ElfSymbolBinding.Weak
            ? 0UL
            : throw new PayloadException(_payload.File, $"unknown symbol '{symbol.Name}' referenced from {where}");
    }

    private ulong AddressOfDefined(ElfSymbol symbol)
    {
        if (symbol.SectionIndex == ElfSymbol.CommonSection && _layout.CommonSymbols.TryGetValue(symbol.Index, out var common))
        {
            return _bases[(int)PayloadRegionKind.Data] + common;
        }

        if (symbol.SectionIndex == ElfSymbol.AbsoluteSection)
        {
            return symbol.Value;
        }

        return _layout.Sections.TryGetValue((int)symbol.SectionIndex, out var placement)
            ? AddressOf(placement) + (symbol.Type == ElfSymbolType.Section ? 0UL : symbol.Value)
            : throw new ArgumentException($"'{symbol.Name}' is not defined in a loaded section of payload {_payload.File}", nameof(symbol));
    }

    private static bool FitsInt32(ulong value) => (long)value is >= int.MinValue and <= int.MaxValue;

    private static void RequireAligned(ulong address, PayloadRegionSize region, string parameter)
    {
        if (address % region.Alignment != 0)
        {
            throw new ArgumentException($"0x{address:x} is not aligned to the region's 0x{region.Alignment:x} bytes", parameter);
        }
    }
}
