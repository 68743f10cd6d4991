using System.Buffers.Binary;
using LivePatch.Elf;

namespace LivePatch.Tests.Elf;

/// <summary>
/// Each row takes a valid compiled file, makes one field lie, and expects <see cref="ElfFormatException"/>
/// with a message naming the field and the offset of that field.
/// </summary>
public class ElfMalformedInputTests
{
    private const string Object = "sample-O2.o";
    private const string Executable = "sample-pie";

    /// <summary>A corruption: the sample it applies to, what it does (returning the bytes and the expected offset), and a message fragment.</summary>
    private sealed record Lie(string Sample, Func<byte[], ElfFile, (byte[] Bytes, long Offset)> Corrupt, string Message);

    private static readonly Dictionary<string, Lie> Lies = new()
    {
        ["file shorter than the header"] = new(Object, (b, _) => (b[..40], 0), "shorter than the 64-byte"),
        ["bad magic"] = new(Object, (b, _) => Set8(b, 1, (byte)'X', 0), "magic"),
        ["ELF32 class"] = new(Object, (b, _) => Set8(b, 4, 1, 4), "EI_CLASS 1 (ELF32)"),
        ["big-endian data"] = new(Object, (b, _) => Set8(b, 5, 2, 5), "EI_DATA 2 (big-endian)"),
        ["ident version"] = new(Object, (b, _) => Set8(b, 6, 9, 6), "EI_VERSION"),
        ["core file type"] = new(Object, (b, _) => Set16(b, 16, 4, 16), "e_type 4"),
        ["wrong machine"] = new(Object, (b, _) => Set16(b, 18, 3, 18), "e_machine 3"),
        ["header size"] = new(Object, (b, _) => Set16(b, 52, 52, 52), "e_ehsize"),
        ["section header size"] = new(Object, (b, _) => Set16(b, 58, 40, 58), "e_shentsize 40"),
        ["section table past end"] = new(Object, (b, _) => Set64(b, 40, (ulong)b.Length - 8, 40), "e_shoff"),
        ["section table misaligned"] = new(Object, (b, _) => Set64(b, 40, ShOff(b) + 4, 40), "e_shoff 0x"),
        ["section count overflows the file"] = new(Object, (b, _) => Set16(b, 60, 0xfffe, 60), "65534 headers"),
        ["sections but no table"] = new(Object, (b, _) => Set64(b, 40, 0, 60), "e_shoff is 0"),
        ["extended section count huge"] = new(Object, (b, _) =>
        {
            Set16(b, 60, 0, 0);
            return Set64(b, (long)ShOff(b) + 32, ulong.MaxValue, (long)ShOff(b) + 32);
        }, "18446744073709551615 headers"),
        ["extended section count zero"] = new(Object, (b, _) => Set16(b, 60, 0, (long)ShOff(b) + 32), "sh_size is 0 too"),
        ["e_shstrndx out of range"] = new(Object, (b, e) => Set16(b, 62, (ushort)e.Sections.Count, 62), "e_shstrndx"),
        ["e_shstrndx SHN_XINDEX to nowhere"] = new(Object, (b, _) =>
        {
            Set16(b, 62, 0xffff, 0);
            return Set32(b, (long)ShOff(b) + 40, 0x7777, (long)ShOff(b) + 40);
        }, "e_shstrndx 30583 is out of range"),
        ["e_shstrndx names a non-string table"] = new(Object, (b, e) =>
            Set16(b, 62, (ushort)Index(e, ".text"), Header(b, e, ".text") + 4), "not SHT_STRTAB"),
        ["section 0 not null"] = new(Object, (b, _) => Set32(b, (long)ShOff(b) + 4, 1, (long)ShOff(b) + 4), "section 0: sh_type 1"),
        ["section offset past end"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".rela.text") + 24, (ulong)b.Length - 0x10, Header(b, e, ".rela.text") + 24),
            "(.rela.text): sh_offset 0x"),
        ["section offset + size overflows"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".text") + 24, ulong.MaxValue - 4, Header(b, e, ".text") + 24), "runs past end of file"),
        ["section size past end"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".text") + 32, ulong.MaxValue, Header(b, e, ".text") + 24), "sh_size 0xffffffffffffffff"),
        ["section name past string table"] = new(Object, (b, e) =>
            Set32(b, Header(b, e, ".text"), 0xffffff, Header(b, e, ".text")), "sh_name 0xffffff"),
        ["section name not terminated"] = new(Object, (b, e) =>
        {
            // The first section whose name runs up to the table's last NUL is the one that lies.
            var names = e.FindSection(".shstrtab")!;
            var owner = e.Sections.First(s => s.Index > 0
                && BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)Header(b, e, s.Index))) + (ulong)s.Name.Length == names.Size - 1);
            b[(int)(names.Offset + names.Size - 1)] = (byte)'x';
            return (b, Header(b, e, owner.Index));
        }, "not NUL-terminated"),
        ["section link to nowhere"] = new(Object, (b, e) =>
            Set32(b, Header(b, e, ".symtab") + 40, 999, Header(b, e, ".symtab") + 40), "(.symtab): sh_link 999"),
        ["symbol table linked to a non-string table"] = new(Object, (b, e) =>
            Set32(b, Header(b, e, ".symtab") + 40, (uint)Index(e, ".text"), Header(b, e, ".symtab") + 40), "not a string table"),
        ["relocations linked to a non-symbol table"] = new(Object, (b, e) =>
            Set32(b, Header(b, e, ".rela.text") + 40, (uint)Index(e, ".text"), Header(b, e, ".rela.text") + 40), "not a symbol table"),
        ["relocation target to nowhere"] = new(Object, (b, e) =>
            Set32(b, Header(b, e, ".rela.text") + 44, 999, Header(b, e, ".rela.text") + 44), "sh_info 999"),
        ["symbol entry size wrong"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".symtab") + 56, 16, Header(b, e, ".symtab") + 56), "sh_entsize 0x10"),
        ["relocation entry size wrong"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".rela.text") + 56, 16, Header(b, e, ".rela.text") + 56), "Elf64_Rela entry is 24 bytes"),
        ["symbol table size not a multiple"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".symtab") + 32, e.FindSection(".symtab")!.Size - 1, Header(b, e, ".symtab") + 32), "not a multiple of sh_entsize"),
        ["relocation table misaligned"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".rela.text") + 24, e.FindSection(".rela.text")!.Offset + 4, Header(b, e, ".rela.text") + 24), "misaligned"),
        ["alignment not a power of two"] = new(Object, (b, e) =>
            Set64(b, Header(b, e, ".text") + 48, 3, Header(b, e, ".text") + 48), "sh_addralign 0x3"),
        ["symbol name past string table"] = new(Object, (b, e) =>
            Set32(b, Symbol(e, 1), 0xfffffff, Symbol(e, 1)), "symbol 1 st_name 0xfffffff"),
        ["symbol section index past the table"] = new(Object, (b, e) =>
            Set16(b, Symbol(e, 1) + 6, 0xfeff, Symbol(e, 1) + 6), "st_shndx 65279"),
        ["symbol SHN_XINDEX without an index table"] = new(Object, (b, e) =>
            Set16(b, Symbol(e, 1) + 6, 0xffff, Symbol(e, 1) + 6), "SHN_XINDEX"),
        ["relocation symbol past the table"] = new(Object, (b, e) =>
            Set32(b, (long)e.FindSection(".rela.text")!.Offset + 12, 0xffff, (long)e.FindSection(".rela.text")!.Offset + 8),
            "relocation 0 names symbol 65535"),
        ["note name size past end"] = new(Executable, (b, e) =>
            Set32(b, (long)e.FindSection(".note.gnu.build-id")!.Offset, 0xfffffff0, (long)e.FindSection(".note.gnu.build-id")!.Offset),
            "n_namesz 0xfffffff0"),
        ["note descriptor size past end"] = new(Executable, (b, e) =>
            Set32(b, (long)e.FindSection(".note.gnu.build-id")!.Offset + 4, 0x1000, (long)e.FindSection(".note.gnu.build-id")!.Offset + 4),
            "n_descsz 0x1000"),
        ["note header cut short"] = new(Executable, (b, e) =>
            (Set64(b, Header(b, e, ".note.gnu.build-id") + 32, 8, 0).Bytes, (long)e.FindSection(".note.gnu.build-id")!.Offset),
            "needs a 12-byte header"),
        ["note section misaligned"] = new(Executable, (b, e) =>
            Set64(b, Header(b, e, ".note.gnu.build-id") + 24, e.FindSection(".note.gnu.build-id")!.Offset + 2, Header(b, e, ".note.gnu.build-id") + 24),
            "misaligned"),
        ["program header size"] = new(Executable, (b, _) => Set16(b, 54, 32, 54), "e_phentsize 32"),
        ["program headers misaligned"] = new(Executable, (b, _) => Set64(b, 32, 65, 32), "e_phoff 0x41"),
        ["program header count overflows the file"] = new(Executable, (b, _) => Set16(b, 56, 0xfffe, 32), "65534 headers"),
        ["PN_XNUM with a huge count"] = new(Executable, (b, _) =>
        {
            Set16(b, 56, 0xffff, 0);
            return Set32(b, (long)ShOff(b) + 44, 0xffffffff, 32);
        }, "4294967295 headers"),
        ["segment past end"] = new(Executable, (b, e) =>
            Set64(b, Phdr(b, e, ElfSegmentType.Load) + 32, (ulong)b.Length + 1, Phdr(b, e, ElfSegmentType.Load) + 8), "p_filesz"),
        ["segment file size above memory size"] = new(Executable, (b, e) =>
            Set64(b, Phdr(b, e, ElfSegmentType.Load) + 40, 0, Phdr(b, e, ElfSegmentType.Load) + 32), "larger than p_memsz"),
        ["segment alignment not a power of two"] = new(Executable, (b, e) =>
            Set64(b, Phdr(b, e, ElfSegmentType.Load) + 48, 0x1001, Phdr(b, e, ElfSegmentType.Load) + 48), "p_align 0x1001"),
        ["load segment address not congruent"] = new(Executable, (b, e) =>
            Set64(b, Phdr(b, e, ElfSegmentType.Load) + 16, 1, Phdr(b, e, ElfSegmentType.Load) + 16), "not congruent"),
        ["note segment past end"] = new(Executable, (b, e) =>
            Set64(b, Phdr(b, e, ElfSegmentType.Note) + 8, (ulong)b.Length, Phdr(b, e, ElfSegmentType.Note) + 8), "(type 0x4): p_offset"),
    };

    public static TheoryData<string> LieNames => [.. Lies.Keys];

    [Theory]
    [MemberData(nameof(LieNames))]
    public void Lie_is_rejected_with_its_field_and_offset(string lie)
    {
        var (sample, corrupt, message) = Lies[lie];
        var bytes = ElfSamples.BytesOf(sample);
        var valid = ElfFile.Parse((byte[])bytes.Clone());
        var (corrupted, offset) = corrupt(bytes, valid);

        var error = Assert.Throws<ElfFormatException>(() => ElfFile.Parse(corrupted));

        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.Equal(offset, error.Offset);
        Assert.Contains($"at file offset 0x{offset:x}", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(Object)]
    [InlineData(Executable)]
    public void Every_truncation_is_rejected(string sample)
    {
        var bytes = ElfSamples.BytesOf(sample);
        var step = bytes.Length / 2000 + 1;
        for (var length = 0; length < bytes.Length; length += step)
        {
            var error = Assert.Throws<ElfFormatException>(() => ElfFile.Parse(bytes.AsMemory(0, length)));
            Assert.InRange(error.Offset, 0, bytes.Length);
        }
    }

    [Fact]
    public void NoBits_sections_have_no_file_range_to_check()
    {
        var bytes = ElfSamples.BytesOf(Executable);
        var valid = ElfFile.Parse((byte[])bytes.Clone());
        Set64(bytes, Header(bytes, valid, ".bss") + 24, 0xffff_ffff_0000, 0);

        var elf = ElfFile.Parse(bytes);

        var bss = elf.FindSection(".bss")!;
        Assert.Equal(0xffff_ffff_0000UL, bss.Offset);
        Assert.True(elf.GetSectionData(bss).IsEmpty);
    }

    [Fact]
    public void Extended_section_numbering_reads_count_and_name_index_from_section_0()
    {
        var bytes = ElfSamples.BytesOf(Object);
        var valid = ElfFile.Parse((byte[])bytes.Clone());
        var section0 = (long)ShOff(bytes);
        Set64(bytes, section0 + 32, (ulong)valid.Sections.Count, 0);
        Set32(bytes, section0 + 40, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(62)), 0);
        Set16(bytes, 60, 0, 0);
        Set16(bytes, 62, 0xffff, 0);

        var elf = ElfFile.Parse(bytes);

        Assert.Equal(valid.Sections.Select(s => s.Name), elf.Sections.Select(s => s.Name));
        Assert.Equal(valid.Symbols, elf.Symbols);
    }

    [Fact]
    public void Extended_program_header_count_is_read_from_section_0()
    {
        var bytes = ElfSamples.BytesOf(Executable);
        var valid = ElfFile.Parse((byte[])bytes.Clone());
        Set32(bytes, (long)ShOff(bytes) + 44, (uint)valid.Segments.Count, 0);
        Set16(bytes, 56, 0xffff, 0);

        Assert.Equal(valid.Segments, ElfFile.Parse(bytes).Segments);
    }

    [Fact]
    public void Accessors_refuse_sections_of_another_file()
    {
        var one = ElfFile.Load(ElfSamples.PathOf(Object));
        var other = ElfFile.Load(ElfSamples.PathOf(Object));

        Assert.Throws<ArgumentException>(() => one.GetSectionData(other.FindSection(".text")!));
        Assert.Throws<ArgumentException>(() => one.ReadString(one.FindSection(".text")!, 0));
        Assert.Throws<ElfFormatException>(() => one.ReadString(one.FindSection(".strtab")!, uint.MaxValue));
    }

    private static ulong ShOff(byte[] bytes) => BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(40));

    private static int Index(ElfFile elf, string name) => elf.FindSection(name)!.Index;

    private static long Header(byte[] bytes, ElfFile elf, string name) => Header(bytes, elf, Index(elf, name));

    private static long Header(byte[] bytes, ElfFile elf, int index) =>
        index < elf.Sections.Count ? (long)ShOff(bytes) + (index * 64L) : throw new ArgumentOutOfRangeException(nameof(index));

    private static long Phdr(byte[] bytes, ElfFile elf, ElfSegmentType type) =>
        (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(32)) + (elf.Segments.First(s => s.Type == type).Index * 56L);

    private static long Symbol(ElfFile elf, int index) => (long)elf.FindSection(".symtab")!.Offset + (index * 24L);

    private static (byte[], long) Set8(byte[] bytes, long at, byte value, long expected)
    {
        bytes[at] = value;
        return (bytes, expected);
    }

    private static (byte[], long) Set16(byte[] bytes, long at, ushort value, long expected)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan((int)at), value);
        return (bytes, expected);
    }

    private static (byte[], long) Set32(byte[] bytes, long at, uint value, long expected)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)at), value);
        return (bytes, expected);
    }

    private static (byte[] Bytes, long Offset) Set64(byte[] bytes, long at, ulong value, long expected)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)at), value);
        return (bytes, expected);
    }
}
