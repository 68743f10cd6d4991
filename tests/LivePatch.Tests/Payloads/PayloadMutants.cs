using System.Buffers.Binary;
using LivePatch.Elf;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>One corrupted payload object and how it was made, for failure messages.</summary>
internal sealed record PayloadMutant(byte[] Bytes, string Description);

/// <summary>
/// Corrupts a real gcc-built payload object the ways a bad disk, a bad tool or an attacker would: truncation at every
/// header boundary, bit flips, section flags, sizes and alignments, relocation offsets, types, symbols and addends,
/// symbol sections, values and sizes, record kinds, sizes and operands, names. Every field is located from the parsed
/// original, so structured mutations land on what the loader and linker read. Also linked into the bench's long run.
/// </summary>
internal sealed class PayloadMutants
{
    /// <summary>Kinds of mutation <see cref="Next"/> draws from, one per case of <see cref="MutateOnce"/>.</summary>
    private const int Kinds = 12;

    private readonly byte[] _original;
    private readonly Field[] _header;
    private readonly Field[] _sectionFields;
    private readonly Field[] _symbolFields;
    private readonly Field[] _relocationFields;
    private readonly Field[] _recordFields;
    private readonly Field[] _all;
    private readonly SectionAt[] _sections;
    private readonly (int Offset, int Length)[] _strings;
    private readonly int[] _boundaries;
    private readonly int _symbolCount;
    private readonly int _sectionCount;

    /// <summary>Where a field lies in the file, how wide it is and what it is, e.g. <c>section 4 (.text.f) sh_flags</c>.</summary>
    private readonly record struct Field(int Offset, int Width, string Name);

    /// <summary>A section's header offset, with its name and size, for whole-section mutations.</summary>
    private readonly record struct SectionAt(int Header, string Name, ulong Size, bool Loaded);

    public PayloadMutants(byte[] original)
    {
        _original = original;
        var elf = ElfFile.Parse((byte[])original.Clone());
        _sectionCount = elf.Sections.Count;
        _symbolCount = elf.Symbols.Count;
        _header =
        [
            new(4, 1, "EI_CLASS"), new(5, 1, "EI_DATA"), new(16, 2, "e_type"), new(18, 2, "e_machine"), new(40, 8, "e_shoff"),
            new(58, 2, "e_shentsize"), new(60, 2, "e_shnum"), new(62, 2, "e_shstrndx"),
        ];
        var sections = new List<Field>();
        var sectionList = new List<SectionAt>();
        var boundaries = new SortedSet<int> { 0, 16, 64, original.Length };
        var strings = new List<(int, int)>();
        foreach (var section in elf.Sections)
        {
            var at = (int)section.HeaderOffset;
            var name = section.ToString();
            sections.AddRange([
                new(at, 4, $"{name} sh_name"), new(at + 4, 4, $"{name} sh_type"), new(at + 8, 8, $"{name} sh_flags"),
                new(at + 24, 8, $"{name} sh_offset"), new(at + 32, 8, $"{name} sh_size"), new(at + 40, 4, $"{name} sh_link"),
                new(at + 44, 4, $"{name} sh_info"), new(at + 48, 8, $"{name} sh_addralign"), new(at + 56, 8, $"{name} sh_entsize"),
            ]);
            sectionList.Add(new SectionAt(at, name, section.Size, PayloadLayout.IsLoaded(section)));
            boundaries.Add(at);
            if (section.HasFileData)
            {
                boundaries.Add((int)section.Offset);
                boundaries.Add((int)(section.Offset + section.Size));
            }

            if (section.Type == ElfSectionType.StringTable || section.Name.StartsWith(".rodata.str", StringComparison.Ordinal))
            {
                strings.Add(((int)section.Offset, (int)section.Size));
            }
        }

        var symbols = new List<Field>();
        var symbolTable = elf.Sections.First(s => s.Type == ElfSectionType.SymbolTable);
        foreach (var symbol in elf.Symbols)
        {
            var at = (int)symbolTable.Offset + (symbol.Index * 24);
            var name = $"symbol {symbol.Index} ({symbol.Name})";
            symbols.AddRange([
                new(at, 4, $"{name} st_name"), new(at + 4, 1, $"{name} st_info"), new(at + 6, 2, $"{name} st_shndx"),
                new(at + 8, 8, $"{name} st_value"), new(at + 16, 8, $"{name} st_size"),
            ]);
            boundaries.Add(at);
        }

        var relocations = new List<Field>();
        foreach (var relocationSection in elf.RelocationSections)
        {
            for (var i = 0; i < relocationSection.Relocations.Count; i++)
            {
                var at = (int)relocationSection.Section.Offset + (i * 24);
                var name = $"{relocationSection.Section.Name}[{i}]";
                relocations.AddRange([
                    new(at, 8, $"{name} r_offset"), new(at + 8, 4, $"{name} r_info type"), new(at + 12, 4, $"{name} r_info symbol"),
                    new(at + 16, 8, $"{name} r_addend"),
                ]);
                boundaries.Add(at);
            }
        }

        var records = new List<Field>();
        var recordSection = elf.FindSection(Payload.RecordSection)!;
        for (var offset = 0; offset + Payload.RecordSize <= (int)recordSection.Size; offset += Payload.RecordSize)
        {
            var at = (int)recordSection.Offset + offset;
            var name = $"record {Payload.RecordSection}+0x{offset:x}";
            records.AddRange([new(at, 4, $"{name} kind"), new(at + 4, 4, $"{name} size"), new(at + 8, 8, $"{name} a"), new(at + 16, 8, $"{name} b")]);
            boundaries.Add(at);
        }

        _sectionFields = [.. sections];
        _symbolFields = [.. symbols];
        _relocationFields = [.. relocations];
        _recordFields = [.. records];
        _all = [.. _header, .. _sectionFields, .. _symbolFields, .. _relocationFields, .. _recordFields];
        _sections = [.. sectionList];
        _strings = [.. strings];
        _boundaries = [.. boundaries.Where(b => b <= original.Length)];
    }

    /// <summary>A new mutant: one to three mutations of the original drawn from <paramref name="random"/>.</summary>
    public PayloadMutant Next(Random random)
    {
        var bytes = (byte[])_original.Clone();
        var what = new List<string>();
        var count = random.Next(10) switch { < 7 => 1, < 9 => 2, _ => 3 };
        var length = bytes.Length;
        for (var i = 0; i < count; i++)
        {
            // Truncation comes last, so that the other mutations find their fields.
            length = Math.Min(length, MutateOnce(bytes, random, what));
        }

        return new PayloadMutant(length < bytes.Length ? bytes[..length] : bytes, string.Join("; ", what));
    }

    /// <summary>Mutates <paramref name="bytes"/> in place and returns the length to truncate them to (their length when not truncated).</summary>
    private int MutateOnce(byte[] bytes, Random random, List<string> what)
    {
        switch (random.Next(Kinds))
        {
            case 0:
            {
                var at = Math.Clamp(_boundaries[random.Next(_boundaries.Length)] + random.Next(-1, 2), 0, bytes.Length);
                what.Add($"truncated to 0x{at:x} bytes");
                return at;
            }
            case 1:
            {
                for (var flips = random.Next(1, 5); flips > 0; flips--)
                {
                    var field = _all[random.Next(_all.Length)];
                    var at = random.Next(2) == 0 ? field.Offset + random.Next(field.Width) : random.Next(bytes.Length);
                    var mask = (byte)(1 << random.Next(8));
                    bytes[at] ^= mask;
                    what.Add($"bit 0x{mask:x2} of byte 0x{at:x} flipped");
                }

                return bytes.Length;
            }
            case 2:
                Overwrite(bytes, _all[random.Next(_all.Length)], Extreme(random), what);
                return bytes.Length;
            case 3:
            {
                // Flags of a loaded section: clear or set ALLOC, WRITE, EXECINSTR, TLS, or write a random value.
                var section = PickSection(random, preferLoaded: true);
                var flags = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(section.Header + 8));
                ulong[] bits = [0x1, 0x2, 0x4, 0x6, 0x400, 0x3];
                var bit = bits[random.Next(bits.Length)];
                var value = random.Next(3) switch { 0 => flags & ~bit, 1 => flags | bit, _ => (ulong)random.NextInt64() };
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(section.Header + 8), value);
                what.Add($"{section.Name} sh_flags 0x{flags:x} -> 0x{value:x}");
                return bytes.Length;
            }
            case 4:
            {
                // Two sections' sizes (or offsets) swapped.
                var (first, second) = (PickSection(random, preferLoaded: true), PickSection(random, preferLoaded: random.Next(2) == 0));
                var field = random.Next(3) == 0 ? 24 : 32;
                var a = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(first.Header + field));
                var b = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(second.Header + field));
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(first.Header + field), b);
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(second.Header + field), a);
                what.Add($"{(field == 24 ? "sh_offset" : "sh_size")} of {first.Name} and {second.Name} swapped");
                return bytes.Length;
            }
            case 5:
            {
                ulong[] alignments = [0, 1, 3, 12, 0x1000, 0x2000, 0x10000, 0x8000_0000, 1UL << 40, 1UL << 63, ulong.MaxValue];
                var section = PickSection(random, preferLoaded: true);
                var value = alignments[random.Next(alignments.Length)];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(section.Header + 48), value);
                what.Add($"{section.Name} sh_addralign = 0x{value:x}");
                return bytes.Length;
            }
            case 6:
            {
                var field = _relocationFields[random.Next(_relocationFields.Length)];
                ulong value = field.Name.EndsWith(" type", StringComparison.Ordinal) ? (ulong)random.Next(0, 48)
                    : field.Name.EndsWith(" symbol", StringComparison.Ordinal) ? (ulong)random.Next(0, _symbolCount + 3)
                    : random.Next(2) == 0 ? (ulong)(long)random.Next(-0x100, 0x100) : Extreme(random);
                Overwrite(bytes, field, value, what);
                return bytes.Length;
            }
            case 7:
            {
                var field = _symbolFields[random.Next(_symbolFields.Length)];
                ulong[] sections = [0, 1, 0xfff1, 0xfff2, 0xff00, 0xff1f, 0xffff, (ulong)_sectionCount, (ulong)_sectionCount - 1];
                ulong value = field.Name.EndsWith("st_shndx", StringComparison.Ordinal)
                    ? random.Next(2) == 0 ? (ulong)random.Next(_sectionCount) : sections[random.Next(sections.Length)]
                    : field.Name.EndsWith("st_info", StringComparison.Ordinal) ? (ulong)random.Next(256)
                    : random.Next(2) == 0 ? (ulong)random.Next(0, 0x200) : Extreme(random);
                Overwrite(bytes, field, value, what);
                return bytes.Length;
            }
            case 8:
            {
                var field = _recordFields[random.Next(_recordFields.Length)];
                ulong value = field.Name.EndsWith(" kind", StringComparison.Ordinal) ? (ulong)random.Next(0, 11)
                    : field.Name.EndsWith(" size", StringComparison.Ordinal) ? (ulong)random.Next(0, 48) : Extreme(random);
                Overwrite(bytes, field, value, what);
                return bytes.Length;
            }
            case 9:
            {
                // A name: a byte of a string table or string literal section made a control character, '!', '+', UTF-8 junk or NUL.
                var (offset, length) = _strings[random.Next(_strings.Length)];
                if (length == 0)
                    return bytes.Length;
                byte[] junk = [0, (byte)'\n', (byte)'\r', 0x1b, (byte)'!', (byte)'+', (byte)'.', 0x80, 0xff, (byte)'a'];
                var at = offset + random.Next(length);
                bytes[at] = junk[random.Next(junk.Length)];
                what.Add($"string byte 0x{at:x} = 0x{bytes[at]:x2}");
                return bytes.Length;
            }
            case 10:
            {
                // A section's size set just past, at or below its neighbours' data, or huge.
                var section = PickSection(random, preferLoaded: true);
                ulong[] sizes = [0, 1, section.Size + 1, section.Size + 8, section.Size * 2, (ulong)bytes.Length, 0x1000_0001, 1UL << 40, ulong.MaxValue];
                var value = sizes[random.Next(sizes.Length)];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(section.Header + 32), value);
                what.Add($"{section.Name} sh_size = 0x{value:x}");
                return bytes.Length;
            }
            default:
            {
                // Relocations of the records: their symbols and addends, which say where names and functions are.
                var field = _relocationFields.Where(f => f.Name.StartsWith(".rela" + Payload.RecordSection, StringComparison.Ordinal)).ToArray() is { Length: > 0 } fields
                    ? fields[random.Next(fields.Length)] : _relocationFields[random.Next(_relocationFields.Length)];
                ulong value = field.Name.EndsWith(" symbol", StringComparison.Ordinal) ? (ulong)random.Next(0, _symbolCount + 1)
                    : field.Name.EndsWith(" r_addend", StringComparison.Ordinal) ? (ulong)(long)random.Next(-8, 0x40)
                    : field.Name.EndsWith(" r_offset", StringComparison.Ordinal) ? (ulong)random.Next(0, 0x50) : (ulong)random.Next(0, 48);
                Overwrite(bytes, field, value, what);
                return bytes.Length;
            }
        }
    }

    private SectionAt PickSection(Random random, bool preferLoaded)
    {
        var loaded = _sections.Where(s => s.Loaded).ToArray();
        return preferLoaded && loaded.Length > 0 && random.Next(4) != 0 ? loaded[random.Next(loaded.Length)] : _sections[1 + random.Next(_sections.Length - 1)];
    }

    private ulong Extreme(Random random)
    {
        ulong[] extremes =
        [
            0, 1, 2, 4, 7, 8, 16, 24, 0xff, 0xfff1, 0xfff2, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000,
            (ulong)_original.Length, (ulong)_original.Length - 1, (ulong)_original.Length + 1, long.MaxValue, 1UL << 63,
            ulong.MaxValue, ulong.MaxValue - 3, ulong.MaxValue - 23, (ulong)random.NextInt64(),
        ];
        return extremes[random.Next(extremes.Length)];
    }

    private static void Overwrite(byte[] bytes, Field field, ulong value, List<string> what)
    {
        if (field.Offset + field.Width > bytes.Length)
            return;
        var span = bytes.AsSpan(field.Offset, field.Width);
        switch (field.Width)
        {
            case 1: span[0] = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(span, value); break;
        }

        what.Add($"{field.Name} = 0x{value:x}");
    }
}
