using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace LivePatch.Elf.ElfInternal;

/// <summary>
/// Just enough of a DWARF reader to find inlined subroutines: unit headers (versions 2 to 5), abbreviation tables,
/// every form's size, and the few attributes that name a subprogram or say where code starts. Everything else is
/// skipped by its form. Each read is bounds-checked; a lie is an <see cref="ElfFormatException"/>.
/// </summary>
internal sealed class DwarfReader
{
    private const ulong TagInlinedSubroutine = 0x1d;
    private const ulong TagSubprogram = 0x2e;

    private const ulong AtName = 0x03;
    private const ulong AtLowPc = 0x11;
    private const ulong AtAbstractOrigin = 0x31;
    private const ulong AtSpecification = 0x47;
    private const ulong AtEntryPc = 0x52;
    private const ulong AtLinkageName = 0x6e;
    private const ulong AtStrOffsetsBase = 0x72;
    private const ulong AtAddrBase = 0x73;
    private const ulong AtDwoName = 0x76;
    private const ulong AtMipsLinkageName = 0x2007;
    private const ulong AtGnuDwoName = 0x2130;
    private const ulong AtGnuAddrBase = 0x2133;

    private readonly Section _info;
    private readonly Section _abbrev;
    private readonly Section _str;
    private readonly Section _lineStr;
    private readonly Section _strOffsets;
    private readonly Section _addr;
    private readonly Dictionary<ulong, Dictionary<ulong, Abbreviation>> _tables = [];
    private readonly Dictionary<long, Subprogram> _subprograms = [];
    private readonly List<(long Origin, ulong Address)> _inlined = [];
    private int _version;
    private bool _split;

    public DwarfReader(ElfFile elf)
    {
        _info = Section.Of(elf, ".debug_info");
        _abbrev = Section.Of(elf, ".debug_abbrev");
        _str = Section.Of(elf, ".debug_str");
        _lineStr = Section.Of(elf, ".debug_line_str");
        _strOffsets = Section.Of(elf, ".debug_str_offsets");
        _addr = Section.Of(elf, ".debug_addr");
    }

    /// <summary>Walks every unit, then names each inlined subroutine's origin and keeps those in <paramref name="functions"/>.</summary>
    public DwarfInlineScan FindInlined(IReadOnlySet<string> functions)
    {
        long offset = 0;
        while (offset < _info.Data.Length)
            offset = ReadUnit(offset);
        var copies = new List<DwarfInlinedCopy>();
        foreach (var (origin, address) in _inlined)
            if (NameOf(origin) is { } name && functions.Contains(name))
                copies.Add(new DwarfInlinedCopy(name, address));
        return new DwarfInlineScan(_version, copies) { SplitUnits = _split };
    }

    // Reads the unit at start; returns where the next one begins.
    private long ReadUnit(long start)
    {
        var c = new Cursor(_info, (int)start);
        var length = (ulong)c.U32();
        var offsetSize = 4;
        if (length == 0xffff_ffff)
        {
            length = c.U64();
            offsetSize = 8;
        }
        else if (length >= 0xffff_fff0)
        {
            throw c.Error($"unit at 0x{start:x} has the reserved length 0x{length:x}");
        }
        if (length > (ulong)(_info.Data.Length - c.Position))
            throw c.Error($"unit at 0x{start:x} is 0x{length:x} bytes long, past the end of .debug_info");
        var end = c.Position + (int)length;
        var version = c.U16();
        if (version is < 2 or > 5)
            throw c.Error($"unit at 0x{start:x} has DWARF version {version}; versions 2 to 5 are read");
        byte unitType = 1;
        int addressSize;
        ulong abbrevOffset;
        if (version >= 5)
        {
            unitType = c.U8();
            addressSize = c.U8();
            abbrevOffset = c.Offset(offsetSize);
        }
        else
        {
            abbrevOffset = c.Offset(offsetSize);
            addressSize = c.U8();
        }
        if (addressSize is not (4 or 8))
            throw c.Error($"unit at 0x{start:x} has {addressSize}-byte addresses");
        switch (unitType)
        {
            case 1 or 3: // compile, partial
                break;
            case 4 or 5: // skeleton, split compile: their dwo_id
                _split = true;
                c.Skip(8);
                break;
            case 2 or 6: // type units hold no code
                return end;
            default:
                throw c.Error($"unit at 0x{start:x} has unknown unit type {unitType}");
        }
        _version = Math.Max(_version, version);
        var unit = new Unit(start, version, offsetSize, addressSize);
        var abbreviations = Abbreviations(abbrevOffset);
        // The start of the function each nesting level lies in: where an inlined copy without an address of its own starts.
        var scopes = new Stack<ulong>();
        ulong scope = 0;
        while (c.Position < end)
        {
            var offset = c.Position;
            var code = c.ULeb();
            if (code == 0)
            {
                scope = scopes.Count > 0 ? scopes.Pop() : 0;
                continue;
            }
            if (!abbreviations.TryGetValue(code, out var abbreviation))
                throw c.Error($"entry at 0x{offset:x} uses abbreviation {code}, which table 0x{abbrevOffset:x} does not define");
            var entry = new Entry();
            foreach (var attribute in abbreviation.Attributes)
                ReadAttribute(ref c, unit, attribute, ref entry);
            _split |= entry.NamesDwo;
            var low = entry.LowPc is { } lowPc ? Address(unit, lowPc) : (ulong?)null;
            if (abbreviation.Tag == TagSubprogram)
                _subprograms[offset] = new Subprogram(entry.Name, entry.LinkageName, entry.Origin);
            else if (abbreviation.Tag == TagInlinedSubroutine)
                _inlined.Add((entry.Origin, EntryAddress(unit, entry, low) ?? low ?? scope));
            if (abbreviation.HasChildren)
            {
                scopes.Push(scope);
                if (abbreviation.Tag == TagSubprogram && low is { } functionStart)
                    scope = functionStart;
            }
        }
        return end;
    }

    private static void ReadAttribute(ref Cursor c, Unit unit, AttributeSpec attribute, ref Entry entry)
    {
        var form = attribute.Form;
        while (form == 0x16) // DW_FORM_indirect
            form = c.ULeb();
        var value = ReadValue(ref c, unit, form, attribute.ImplicitConstant);
        switch (attribute.Name)
        {
            case AtName when value.IsString:
                entry.Name = new NameValue(value, unit);
                break;
            case AtLinkageName or AtMipsLinkageName when value.IsString:
                entry.LinkageName = new NameValue(value, unit);
                break;
            case AtAbstractOrigin or AtSpecification when value.Class == ValueClass.Reference:
                entry.Origin = (long)value.Number;
                break;
            case AtLowPc when value.Class is ValueClass.Address or ValueClass.AddressIndex:
                entry.LowPc = value;
                break;
            case AtEntryPc when value.Class is ValueClass.Address or ValueClass.AddressIndex or ValueClass.Constant:
                entry.EntryPc = value;
                break;
            case AtStrOffsetsBase when value.Class == ValueClass.Constant:
                unit.StrOffsetsBase = (long)value.Number;
                break;
            case AtAddrBase or AtGnuAddrBase when value.Class == ValueClass.Constant:
                unit.AddrBase = (long)value.Number;
                break;
            case AtDwoName or AtGnuDwoName:
                entry.NamesDwo = true;
                break;
        }
    }

    // DW_AT_entry_pc: an address, or (DWARF 5) an offset from the entry's low pc.
    private ulong? EntryAddress(Unit unit, Entry entry, ulong? low) => entry.EntryPc switch
    {
        { Class: ValueClass.Constant } offset => low is { } start ? start + offset.Number : null,
        { } address => Address(unit, address),
        null => null,
    };

    // Reads a value of any form; what the caller does not use is only skipped over.
    private static Value ReadValue(ref Cursor c, Unit unit, ulong form, long implicitConstant)
    {
        switch (form)
        {
            case 0x01: return new(ValueClass.Address, c.Unsigned(unit.AddressSize)); // addr
            case 0x03: c.Skip(c.U16()); return default; // block2
            case 0x04: c.Skip(c.U32()); return default; // block4
            case 0x05: return new(ValueClass.Constant, c.U16()); // data2
            case 0x06: return new(ValueClass.Constant, c.U32()); // data4
            case 0x07: return new(ValueClass.Constant, c.U64()); // data8
            case 0x08: return new(ValueClass.InlineString, (ulong)c.SkipString()); // string
            case 0x09: c.Skip(c.ULeb()); return default; // block
            case 0x0a: c.Skip(c.U8()); return default; // block1
            case 0x0b: return new(ValueClass.Constant, c.U8()); // data1
            case 0x0c: return new(ValueClass.Constant, c.U8()); // flag
            case 0x0d: return new(ValueClass.Constant, (ulong)c.SLeb()); // sdata
            case 0x0e: return new(ValueClass.StringOffset, c.Offset(unit.OffsetSize)); // strp
            case 0x0f: return new(ValueClass.Constant, c.ULeb()); // udata
            case 0x10: return new(ValueClass.Reference, c.Unsigned(unit.Version == 2 ? unit.AddressSize : unit.OffsetSize)); // ref_addr
            case 0x11: return Reference(unit, c.U8()); // ref1
            case 0x12: return Reference(unit, c.U16()); // ref2
            case 0x13: return Reference(unit, c.U32()); // ref4
            case 0x14: return Reference(unit, c.U64()); // ref8
            case 0x15: return Reference(unit, c.ULeb()); // ref_udata
            case 0x17: return new(ValueClass.Constant, c.Offset(unit.OffsetSize)); // sec_offset
            case 0x18: c.Skip(c.ULeb()); return default; // exprloc
            case 0x19: return new(ValueClass.Constant, 1); // flag_present
            case 0x1a or 0x1f02: return new(ValueClass.StringIndex, c.ULeb()); // strx, GNU_str_index
            case 0x1b or 0x1f01: return new(ValueClass.AddressIndex, c.ULeb()); // addrx, GNU_addr_index
            case 0x1c: c.Skip(4); return default; // ref_sup4
            case 0x1d or 0x1f20 or 0x1f21: c.Skip((ulong)unit.OffsetSize); return default; // strp_sup, GNU_ref_alt, GNU_strp_alt: in another file
            case 0x1e: c.Skip(16); return default; // data16
            case 0x1f: return new(ValueClass.LineStringOffset, c.Offset(unit.OffsetSize)); // line_strp
            case 0x20 or 0x24: c.Skip(8); return default; // ref_sig8, ref_sup8
            case 0x21: return new(ValueClass.Constant, (ulong)implicitConstant); // implicit_const
            case 0x22 or 0x23: c.ULeb(); return default; // loclistx, rnglistx
            case >= 0x25 and <= 0x28: return new(ValueClass.StringIndex, c.Unsigned((int)form - 0x24)); // strx1..4
            case >= 0x29 and <= 0x2c: return new(ValueClass.AddressIndex, c.Unsigned((int)form - 0x28)); // addrx1..4
            default: throw c.Error($"unknown DWARF form 0x{form:x}");
        }
    }

    private static Value Reference(Unit unit, ulong offset) => new(ValueClass.Reference, (ulong)unit.Start + offset);

    private ulong Address(Unit unit, Value value)
    {
        if (value.Class == ValueClass.Address)
            return value.Number;
        var at = unit.AddrBase + ((long)value.Number * unit.AddressSize);
        if (unit.AddrBase < 0 || at < 0 || at > _addr.Data.Length - unit.AddressSize)
            return 0;
        var c = new Cursor(_addr, (int)at);
        return c.Unsigned(unit.AddressSize);
    }

    private Dictionary<ulong, Abbreviation> Abbreviations(ulong offset)
    {
        if (_tables.TryGetValue(offset, out var known))
            return known;
        if (offset >= (ulong)_abbrev.Data.Length)
            throw new ElfFormatException($"DWARF abbreviation table 0x{offset:x} is past the end of .debug_abbrev", _abbrev.FileOffset);
        var c = new Cursor(_abbrev, (int)offset);
        var table = new Dictionary<ulong, Abbreviation>();
        while (true)
        {
            var code = c.ULeb();
            if (code == 0)
                break;
            var tag = c.ULeb();
            var hasChildren = c.U8() != 0;
            var attributes = new List<AttributeSpec>();
            while (true)
            {
                var name = c.ULeb();
                var form = c.ULeb();
                if (name == 0 && form == 0)
                    break;
                attributes.Add(new AttributeSpec(name, form, form == 0x21 ? c.SLeb() : 0));
            }
            table[code] = new Abbreviation(tag, hasChildren, [.. attributes]);
        }
        _tables[offset] = table;
        return table;
    }

    // The subprogram's linkage name if any entry of its origin chain has one, else its first name.
    private string? NameOf(long offset)
    {
        Value? name = null;
        Unit? unitOfName = null;
        for (var hop = 0; hop < 8 && offset >= 0 && _subprograms.TryGetValue(offset, out var subprogram); hop++)
        {
            if (subprogram.LinkageName is { } linkage)
                return ReadString(linkage.Value, linkage.Unit);
            if (name is null && subprogram.Name is { } own)
            {
                name = own.Value;
                unitOfName = own.Unit;
            }
            offset = subprogram.Origin;
        }
        return name is { } found ? ReadString(found, unitOfName!) : null;
    }

    private string? ReadString(Value value, Unit unit)
    {
        switch (value.Class)
        {
            case ValueClass.InlineString:
                return _info.StringAt((long)value.Number);
            case ValueClass.StringOffset:
                return _str.StringAt((long)value.Number);
            case ValueClass.LineStringOffset:
                return _lineStr.StringAt((long)value.Number);
            case ValueClass.StringIndex:
                // Without DW_AT_str_offsets_base, the contribution's header is taken to start the section.
                var at = (unit.StrOffsetsBase >= 0 ? unit.StrOffsetsBase : unit.OffsetSize * 2) + ((long)value.Number * unit.OffsetSize);
                if (at < 0 || at > _strOffsets.Data.Length - unit.OffsetSize)
                    return null;
                var c = new Cursor(_strOffsets, (int)at);
                return _str.StringAt((long)c.Offset(unit.OffsetSize));
            default:
                return null;
        }
    }

    private enum ValueClass : byte
    {
        None,
        Constant,
        Address,
        AddressIndex,
        Reference,
        InlineString,
        StringOffset,
        LineStringOffset,
        StringIndex,
    }

    private readonly record struct Value(ValueClass Class, ulong Number)
    {
        public bool IsString => Class is ValueClass.InlineString or ValueClass.StringOffset or ValueClass.LineStringOffset or ValueClass.StringIndex;
    }

    // What a string value needs to be read later: its unit's string offsets base.
    private sealed record NameValue(Value Value, Unit Unit);

    private sealed record Subprogram(NameValue? Name, NameValue? LinkageName, long Origin);

    private readonly record struct AttributeSpec(ulong Name, ulong Form, long ImplicitConstant);

    private sealed record Abbreviation(ulong Tag, bool HasChildren, AttributeSpec[] Attributes);

    private sealed class Unit(long start, int version, int offsetSize, int addressSize)
    {
        public long Start => start;
        public int Version => version;
        public int OffsetSize => offsetSize;
        public int AddressSize => addressSize;
        public long StrOffsetsBase { get; set; } = -1;
        public long AddrBase { get; set; } = -1;
    }

    // The attributes of one entry that matter here.
    private struct Entry()
    {
        public NameValue? Name { get; set; }
        public NameValue? LinkageName { get; set; }
        public long Origin { get; set; } = -1;
        public Value? LowPc { get; set; }
        public Value? EntryPc { get; set; }
        public bool NamesDwo { get; set; }
    }

    /// <summary>A DWARF section's bytes (decompressed when the file holds it compressed) and its file offset, for messages.</summary>
    private sealed class Section(ReadOnlyMemory<byte> data, long fileOffset, string name)
    {
        private const int CompressionHeaderSize = 24;

        public ReadOnlyMemory<byte> Data => data;
        public long FileOffset => fileOffset;
        public string Name => name;

        public static Section Of(ElfFile elf, string name)
        {
            if (elf.FindSection(name) is not { } section)
                return new Section(ReadOnlyMemory<byte>.Empty, 0, name);
            var bytes = elf.GetSectionData(section);
            if (!section.Flags.HasFlag(ElfSectionAttributes.Compressed))
                return new Section(bytes, (long)section.Offset, name);
            var span = bytes.Span;
            if (span.Length < CompressionHeaderSize)
                throw new ElfFormatException($"{name} is compressed but shorter than its compression header", (long)section.Offset);
            var type = BinaryPrimitives.ReadUInt32LittleEndian(span);
            var size = BinaryPrimitives.ReadUInt64LittleEndian(span[8..]);
            if (type != 1)
                throw new ElfFormatException($"{name} is compressed with ELFCOMPRESS type {type}; only zlib (1) is read", (long)section.Offset);
            if (size > int.MaxValue)
                throw new ElfFormatException($"{name} decompresses to 0x{size:x} bytes, too many to read", (long)section.Offset);
            var output = new byte[size];
            try
            {
                using var zlib = new ZLibStream(new MemoryStream(bytes[CompressionHeaderSize..].ToArray()), CompressionMode.Decompress);
                zlib.ReadExactly(output);
            }
            catch (Exception error) when (error is InvalidDataException or EndOfStreamException)
            {
                throw new ElfFormatException($"{name} does not decompress to its 0x{size:x} bytes: {error.Message}", (long)section.Offset);
            }
            return new Section(output, (long)section.Offset, name);
        }

        public string? StringAt(long offset)
        {
            var span = data.Span;
            if (offset < 0 || offset >= span.Length)
                return null;
            var rest = span[(int)offset..];
            var nul = rest.IndexOf((byte)0);
            return nul < 0 ? null : Encoding.UTF8.GetString(rest[..nul]);
        }
    }

    /// <summary>A position in a section; every read checks that the bytes are there.</summary>
    private ref struct Cursor(Section section, int position)
    {
        private readonly ReadOnlySpan<byte> _data = section.Data.Span;

        public int Position { get; private set; } = position;

        public byte U8() => Take(1)[0];
        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

        public ulong Offset(int size) => size == 8 ? U64() : U32();

        public ulong Unsigned(int size)
        {
            var bytes = Take((ulong)size);
            ulong value = 0;
            for (var i = size - 1; i >= 0; i--)
                value = (value << 8) | bytes[i];
            return value;
        }

        public ulong ULeb()
        {
            var at = Position;
            if (!Leb128.TryReadUnsigned(_data, ref at, out var value))
                throw Error("a LEB128 number runs past the end of the section");
            Position = at;
            return value;
        }

        public long SLeb()
        {
            var at = Position;
            if (!Leb128.TryReadSigned(_data, ref at, out var value))
                throw Error("a LEB128 number runs past the end of the section");
            Position = at;
            return value;
        }

        public void Skip(ulong count) => Take(count);

        // Skips a NUL-terminated string; returns where it began.
        public int SkipString()
        {
            var start = Position;
            var nul = Position < _data.Length ? _data[Position..].IndexOf((byte)0) : -1;
            if (nul < 0)
                throw Error("string without its terminating NUL");
            Position += nul + 1;
            return start;
        }

        public readonly ElfFormatException Error(string what) =>
            new($"DWARF {section.Name}+0x{Position:x}: {what}", section.FileOffset + Position);

        private ReadOnlySpan<byte> Take(ulong count)
        {
            if (count > (ulong)(_data.Length - Position))
                throw Error($"0x{count:x} bytes needed, past the end of the section");
            var bytes = _data.Slice(Position, (int)count);
            Position += (int)count;
            return bytes;
        }
    }
}
