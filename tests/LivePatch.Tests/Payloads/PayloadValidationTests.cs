using System.Buffers.Binary;
using LivePatch.Elf;
using LivePatch.Payloads;
using static LivePatch.Tests.Payloads.LivePayloads;
using static LivePatch.Tests.Payloads.PayloadBytes;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Issue 12, part 2: the shapes of corrupted payloads that once escaped as internal errors, each made from a real
/// gcc-built object by changing one field, are refused when the payload is loaded (<see cref="Payload.Parse"/>) with
/// one <see cref="PayloadException"/> naming the field; and whatever loads, lays out and links at test addresses
/// throws nothing but <see cref="PayloadException"/>.
/// </summary>
public class PayloadValidationTests
{
    private const ulong Alloc = 0x2, ExecInstr = 0x4;

    private static byte[] Base(string flags = "-O2 -fPIC") => File.ReadAllBytes(Build("mutants/base.c", flags));

    private static byte[] Hooked() => File.ReadAllBytes(Build("mutants/hooked.c", "-O2 -fPIC"));

    public static TheoryData<string> Flags => ["-O0 -fPIC", "-O2 -fPIC", "-O2 -fpie", "-O2 -fno-pic"];

    [Theory]
    [InlineData(Alloc)]
    [InlineData(ExecInstr)]
    [InlineData(Alloc | ExecInstr)]
    public void A_new_function_in_a_section_that_is_not_loaded_code_is_refused_at_load(ulong cleared)
    {
        var bytes = Base();
        SetSectionField(bytes, ".text.first_fixed", 8, SectionField(bytes, ".text.first_fixed", 8) & ~cleared);

        AssertRefused(bytes, "function symbol", "'first_fixed'", ".text.first_fixed", "not loaded executable code", "sh_flags");
    }

    [Theory]
    [InlineData(Alloc)]
    [InlineData(ExecInstr)]
    public void A_hook_in_a_section_that_is_not_loaded_code_is_refused_at_load(ulong cleared)
    {
        var bytes = Hooked();
        SetSectionField(bytes, ".text.check_ready", 8, SectionField(bytes, ".text.check_ready", 8) & ~cleared);

        AssertRefused(bytes, "'check_ready'", ".text.check_ready", "not loaded executable code");
    }

    [Theory]
    [InlineData(".text.first_fixed", ".text.second_fixed", "lies outside its section")]
    [InlineData(".rodata", ".bss", "runs past the end of section")]
    // .text.first_fixed left empty: its function would be placed at a region of size 0, at address 0 (the "cannot reach 0x0").
    [InlineData(".text", ".text.first_fixed", "lies outside its section")]
    public void Two_sections_with_their_sizes_swapped_are_refused_at_load(string one, string other, string fragment)
    {
        var bytes = Base();
        var (first, second) = (SectionField(bytes, one, 32), SectionField(bytes, other, 32));
        SetSectionField(bytes, one, 32, second);
        SetSectionField(bytes, other, 32, first);

        AssertRefused(bytes, fragment, first > second ? one : other);
    }

    [Theory]
    [InlineData(0x8000_0000UL)]
    [InlineData(0x2000UL)]
    [InlineData(1UL << 63)]
    public void A_section_aligned_beyond_a_page_is_refused_at_load(ulong alignment)
    {
        var bytes = Base();
        SetSectionField(bytes, ".text.first_fixed", 48, alignment);

        AssertRefused(bytes, ".text.first_fixed", $"sh_addralign 0x{alignment:x}", "larger than a page");
    }

    [Theory]
    [InlineData(3UL)]
    [InlineData(12UL)]
    [InlineData(ulong.MaxValue)]
    public void A_section_alignment_that_is_not_a_power_of_two_is_malformed(ulong alignment)
    {
        var bytes = Base();
        SetSectionField(bytes, ".rodata", 48, alignment);

        AssertRefused(bytes, "malformed ELF", ".rodata", "sh_addralign", "not a power of two");
    }

    [Fact]
    public void A_relocation_past_the_end_of_its_section_is_refused_at_load()
    {
        var bytes = Base();
        var size = SectionField(bytes, ".text.first_fixed", 32);
        SetRelocationField(bytes, ".rela.text.first_fixed", 0, 0, size - 2);

        AssertRefused(bytes, $".text.first_fixed+0x{size - 2:x}", "r_offset", "lies outside its section");
    }

    [Theory]
    [InlineData(19, "R_X86_64_TLSGD")]
    [InlineData(24, "R_X86_64_PC64")]
    [InlineData(47, "47")]
    public void An_unsupported_relocation_type_is_refused_at_load_naming_it(uint type, string name)
    {
        var bytes = Base();
        SetRelocationType(bytes, ".rela.text.first_fixed", 1, type);

        AssertRefused(bytes, "unsupported relocation", name, ".text.first_fixed+0x");
    }

    [Fact]
    public void A_relocation_naming_a_symbol_past_the_table_is_malformed()
    {
        var bytes = Base();
        var count = (uint)(ElfFile.Parse((byte[])bytes.Clone()).Symbols.Count);
        SetRelocationSymbol(bytes, ".rela.text.first_fixed", 1, count);

        AssertRefused(bytes, "malformed ELF", $"names symbol {count}");
    }

    [Fact]
    public void A_relocation_against_a_section_that_is_not_loaded_is_refused_at_load()
    {
        var bytes = Base();
        var records = SectionIndex(bytes, Payload.RecordSection);
        SetRelocationSymbol(bytes, ".rela.text.first_fixed", 1, SymbolIndex(bytes, s => s.SectionIndex == records, "a symbol in .livepatch.funcs"));

        AssertRefused(bytes, "referenced from .text.first_fixed+0x", "lies in .livepatch.funcs, which is not loaded");
    }

    [Theory]
    [InlineData(0xff00UL, "reserved section index")]
    [InlineData(0xff1fUL, "reserved section index")]
    public void A_symbol_in_a_reserved_section_index_is_refused_at_load(ulong index, string fragment)
    {
        var bytes = Base();
        SetSymbolField(bytes, "scratch", 6, 2, index);

        AssertRefused(bytes, "'scratch'", $"st_shndx 0x{index:x}", fragment);
    }

    [Theory]
    [InlineData("first_fixed", 8, 0x1000UL, "st_value 0x1000")]
    [InlineData("first_fixed", 16, 0x1000UL, "st_size 0x1000")]
    [InlineData("first_fixed", 16, 1UL << 63, "st_size 0x8000000000000000")]
    [InlineData("weights", 8, ulong.MaxValue, "st_value 0xffffffffffffffff")]
    [InlineData("scratch", 16, 5UL, "st_size 0x5")]
    public void A_symbol_outside_its_section_is_refused_at_load(string symbol, int field, ulong value, string fragment)
    {
        var bytes = Base();
        SetSymbolField(bytes, symbol, field, 8, value);

        AssertRefused(bytes, $"'{symbol}'", fragment, "runs past the end of section");
    }

    [Fact]
    public void A_function_moved_into_a_data_section_is_refused_at_load()
    {
        var bytes = Base();
        SetSymbolField(bytes, "first_fixed", 6, 2, (ulong)SectionIndex(bytes, ".data"));

        AssertRefused(bytes, "function symbol", "'first_fixed'", ".data", "not loaded executable code");
    }

    [Theory]
    [InlineData(0u, "unknown kind 0")]
    [InlineData(9u, "unknown kind 9")]
    [InlineData(2u, "does not define")]
    public void A_record_of_a_wrong_kind_is_refused_at_load(uint kind, string fragment)
    {
        var bytes = Base();
        var records = SectionField(bytes, ".livepatch.funcs", 24);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)records + Payload.RecordSize), kind);

        var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes, "mutant.o"));
        AssertOneLine(error);
        Assert.Contains(".livepatch.funcs+0x18", error.Message, StringComparison.Ordinal);
        Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_record_relocation_between_fields_is_refused_at_load()
    {
        var bytes = Base();
        SetRelocationField(bytes, ".rela.livepatch.funcs", 1, 0, 0x11);

        AssertRefused(bytes, ".livepatch.funcs+0x11", "r_offset", "not at a pointer field");
    }

    [Theory]
    [InlineData(0x1000L, "lies outside its section")]
    [InlineData(-1L, "lies outside its section")]
    public void A_record_string_offset_outside_its_section_is_refused_at_load(long addend, string fragment)
    {
        var bytes = Base();
        SetRelocationField(bytes, ".rela.livepatch.funcs", 0, 16, (ulong)addend);

        AssertRefused(bytes, "record at .livepatch.funcs+0x0", fragment);
    }

    [Fact]
    public void A_name_with_a_newline_is_refused_at_load_on_one_line()
    {
        var bytes = Base();
        var strings = SectionField(bytes, ".rodata.str1.1", 24);
        bytes[(int)strings + 3] = (byte)'\n';

        AssertRefused(bytes, "control character U+000A", "\"idl\\u000a");
    }

    [Fact]
    public void A_malformed_section_whose_name_holds_a_carriage_return_is_refused_on_one_line()
    {
        var bytes = Base();
        var names = Section(bytes, ".shstrtab");
        var rodata = Section(bytes, ".rodata");
        var name = (int)names.Offset + (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan((int)rodata.HeaderOffset));
        bytes[name + 3] = (byte)'\r';
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)rodata.HeaderOffset + 32), (ulong)bytes.Length);

        AssertRefused(bytes, "malformed ELF", "(.ro\\u000data)", "runs past end of file");
    }

    [Fact]
    public void A_common_symbol_with_an_alignment_that_is_not_a_power_of_two_is_refused_at_load()
    {
        var bytes = File.ReadAllBytes(Build("replace.c", "-O2 -fpie -fcommon"));
        SetSymbolField(bytes, "payload_common", 8, 8, 12);

        AssertRefused(bytes, "common symbol", "'payload_common'", "alignment (st_value) 0xc");
    }

    [Theory]
    [MemberData(nameof(Flags))]
    public void Truncation_at_every_header_boundary_is_refused_at_load(string flags)
    {
        var bytes = Base(flags);
        var elf = ElfFile.Parse((byte[])bytes.Clone());
        var boundaries = new SortedSet<int> { 0, 16, 63, 64 };
        foreach (var section in elf.Sections)
        {
            boundaries.UnionWith([(int)section.HeaderOffset, (int)section.HeaderOffset + 32, (int)section.Offset, (int)(section.Offset + section.Size) - 1]);
        }

        foreach (var at in boundaries.Where(b => b >= 0 && b < bytes.Length))
        {
            var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes[..at], "mutant.o"));
            AssertOneLine(error);
        }
    }

    /// <summary>Structured and random mutations of every base build: whatever loads then lays out and links, or is refused by a PayloadException.</summary>
    [Theory]
    [InlineData("mutants/base.c", "-O0 -fPIC", 1)]
    [InlineData("mutants/base.c", "-O2 -fPIC", 2)]
    [InlineData("mutants/base.c", "-O2 -fno-pic", 3)]
    [InlineData("mutants/hooked.c", "-O2 -fPIC", 4)]
    [InlineData("replace.c", "-O2 -fpie -fcommon", 5)]
    public void Mutants_load_and_link_or_throw_a_payload_exception_only(string fixture, string flags, int seed)
    {
        var mutants = new PayloadMutants(File.ReadAllBytes(Build(fixture, flags)));
        var random = new Random(seed);
        for (var round = 0; round < 1500; round++)
        {
            var mutant = mutants.Next(random);
            Payload payload;
            try
            {
                payload = Payload.Parse(mutant.Bytes, "mutant.o");
            }
            catch (PayloadException error)
            {
                AssertOneLine(error);
                continue;
            }
            catch (Exception error)
            {
                throw new Xunit.Sdk.XunitException($"seed {seed} round {round} ({mutant.Description}): load threw {error}");
            }

            try
            {
                var layout = PayloadLayout.Compute(payload);
                var linked = PayloadLinker.Link(payload, layout, TextAddress, ReadOnlyAddress, DataAddress, name => name.Length % 3 == 0 ? null : Helper);
                foreach (var symbol in payload.Elf.Symbols.Where(s => s.Type == ElfSymbolType.Function))
                    linked.AddressOf(symbol);
                foreach (var hook in payload.Hooks)
                    linked.AddressOf(hook.Symbol);
            }
            catch (PayloadException error)
            {
                AssertOneLine(error);
            }
            catch (Exception error)
            {
                throw new Xunit.Sdk.XunitException($"seed {seed} round {round} ({mutant.Description}): loaded, then layout or link threw {error}");
            }
        }
    }

    private static void AssertRefused(byte[] bytes, params string[] fragments)
    {
        var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes, "mutant.o"));
        AssertOneLine(error);
        foreach (var fragment in fragments)
            Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
    }

    private static void AssertOneLine(PayloadException error)
    {
        Assert.StartsWith("payload mutant.o: ", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
        Assert.DoesNotContain('\r', error.Message);
    }

    private static void SetRelocationField(byte[] bytes, string section, int index, int field, ulong value) =>
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)Section(bytes, section).Offset + (index * 24) + field), value);

    private static void SetRelocationType(byte[] bytes, string section, int index, uint type) =>
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)Section(bytes, section).Offset + (index * 24) + 8), type);

    private static void SetRelocationSymbol(byte[] bytes, string section, int index, uint symbol) =>
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)Section(bytes, section).Offset + (index * 24) + 12), symbol);
}
