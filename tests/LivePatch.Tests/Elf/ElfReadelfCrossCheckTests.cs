using System.Globalization;
using LivePatch.Elf;

namespace LivePatch.Tests.Elf;

/// <summary>Reads real files and compiled fixtures and compares every field with what <c>readelf -W</c> prints.</summary>
public class ElfReadelfCrossCheckTests
{
    private static readonly Dictionary<string, ElfType> FileTypes = new()
    {
        ["REL"] = ElfType.Relocatable,
        ["EXEC"] = ElfType.Executable,
        ["DYN"] = ElfType.SharedObject,
    };

    private static readonly Dictionary<string, ElfSectionType> SectionTypes = new()
    {
        ["NULL"] = ElfSectionType.Null,
        ["PROGBITS"] = ElfSectionType.ProgBits,
        ["SYMTAB"] = ElfSectionType.SymbolTable,
        ["STRTAB"] = ElfSectionType.StringTable,
        ["RELA"] = ElfSectionType.Rela,
        ["HASH"] = ElfSectionType.Hash,
        ["DYNAMIC"] = ElfSectionType.Dynamic,
        ["NOTE"] = ElfSectionType.Note,
        ["NOBITS"] = ElfSectionType.NoBits,
        ["REL"] = ElfSectionType.Rel,
        ["DYNSYM"] = ElfSectionType.DynamicSymbolTable,
        ["INIT_ARRAY"] = ElfSectionType.InitArray,
        ["FINI_ARRAY"] = ElfSectionType.FiniArray,
        ["PREINIT_ARRAY"] = ElfSectionType.PreInitArray,
        ["GROUP"] = ElfSectionType.Group,
        ["SYMTAB SECTION INDICES"] = ElfSectionType.SymbolTableSectionIndexes,
        ["RELR"] = ElfSectionType.Relr,
        ["LLVM_ADDRSIG"] = ElfSectionType.LlvmAddressSignificance,
        ["GNU_ATTRIBUTES"] = ElfSectionType.GnuAttributes,
        ["GNU_HASH"] = ElfSectionType.GnuHash,
        ["VERDEF"] = ElfSectionType.GnuVersionDefinitions,
        ["VERNEED"] = ElfSectionType.GnuVersionNeeds,
        ["VERSYM"] = ElfSectionType.GnuVersionSymbols,
        ["X86_64_UNWIND"] = ElfSectionType.X64Unwind,
    };

    /// <summary>readelf's letter for each section flag.</summary>
    private static readonly (ElfSectionAttributes Flag, char Letter)[] SectionFlagLetters =
    [
        (ElfSectionAttributes.Write, 'W'), (ElfSectionAttributes.Alloc, 'A'), (ElfSectionAttributes.ExecInstr, 'X'),
        (ElfSectionAttributes.Merge, 'M'), (ElfSectionAttributes.Strings, 'S'), (ElfSectionAttributes.InfoLink, 'I'),
        (ElfSectionAttributes.LinkOrder, 'L'), (ElfSectionAttributes.OsNonConforming, 'O'), (ElfSectionAttributes.Group, 'G'),
        (ElfSectionAttributes.Tls, 'T'), (ElfSectionAttributes.Compressed, 'C'), (ElfSectionAttributes.Exclude, 'E'),
        (ElfSectionAttributes.GnuRetain, 'R'), (ElfSectionAttributes.X64Large, 'l'),
    ];

    private static readonly Dictionary<string, ElfSegmentType> SegmentTypes = new()
    {
        ["NULL"] = ElfSegmentType.Null,
        ["LOAD"] = ElfSegmentType.Load,
        ["DYNAMIC"] = ElfSegmentType.Dynamic,
        ["INTERP"] = ElfSegmentType.Interpreter,
        ["NOTE"] = ElfSegmentType.Note,
        ["SHLIB"] = ElfSegmentType.ShLib,
        ["PHDR"] = ElfSegmentType.ProgramHeaders,
        ["TLS"] = ElfSegmentType.Tls,
        ["GNU_EH_FRAME"] = ElfSegmentType.GnuEhFrame,
        ["GNU_STACK"] = ElfSegmentType.GnuStack,
        ["GNU_RELRO"] = ElfSegmentType.GnuRelro,
        ["GNU_PROPERTY"] = ElfSegmentType.GnuProperty,
        ["GNU_SFRAME"] = ElfSegmentType.GnuSFrame,
    };

    private static readonly Dictionary<string, ElfSymbolType> SymbolTypes = new()
    {
        ["NOTYPE"] = ElfSymbolType.NoType,
        ["OBJECT"] = ElfSymbolType.DataObject,
        ["FUNC"] = ElfSymbolType.Function,
        ["SECTION"] = ElfSymbolType.Section,
        ["FILE"] = ElfSymbolType.File,
        ["COMMON"] = ElfSymbolType.Common,
        ["TLS"] = ElfSymbolType.Tls,
        ["IFUNC"] = ElfSymbolType.GnuIndirectFunction,
    };

    private static readonly Dictionary<string, ElfSymbolBinding> SymbolBindings = new()
    {
        ["LOCAL"] = ElfSymbolBinding.Local,
        ["GLOBAL"] = ElfSymbolBinding.Global,
        ["WEAK"] = ElfSymbolBinding.Weak,
        ["UNIQUE"] = ElfSymbolBinding.GnuUnique,
    };

    private static readonly Dictionary<string, ElfSymbolVisibility> SymbolVisibilities = new()
    {
        ["DEFAULT"] = ElfSymbolVisibility.Default,
        ["INTERNAL"] = ElfSymbolVisibility.Internal,
        ["HIDDEN"] = ElfSymbolVisibility.Hidden,
        ["PROTECTED"] = ElfSymbolVisibility.Protected,
    };

    public static TheoryData<string> Samples => ElfSamples.All;

    [Theory]
    [MemberData(nameof(Samples))]
    public void Header_matches_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var (type, entry) = Readelf.Header(path);

        Assert.Equal(FileTypes[type], elf.Type);
        Assert.Equal(entry, elf.Entry);
        Assert.Equal(ElfMachine.X64, elf.Machine);
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Sections_match_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var expected = Readelf.Sections(path);

        Assert.NotEmpty(expected);
        Assert.Equal(expected.Count, elf.Sections.Count);
        foreach (var row in expected)
        {
            var section = elf.Sections[row.Index];
            var actual = new Readelf.Section(section.Index, section.Name, TypeNameOf(row.Type, section.Type),
                section.Address, section.Offset, section.Size, section.EntrySize, FlagLetters(section.Flags),
                section.Link, section.Info, section.Alignment);
            Assert.Equal(row with { Flags = Sorted(row.Flags) }, actual);
        }
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Segments_match_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var expected = Readelf.Segments(path);

        Assert.Equal(expected.Count, elf.Segments.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            var segment = elf.Segments[i];
            Assert.Equal(i, segment.Index);
            Assert.Equal(SegmentTypes[expected[i].Type], segment.Type);
            var flags = (segment.Flags.HasFlag(ElfSegmentPermissions.Read) ? "R" : "")
                + (segment.Flags.HasFlag(ElfSegmentPermissions.Write) ? "W" : "")
                + (segment.Flags.HasFlag(ElfSegmentPermissions.Execute) ? "E" : "");
            var actual = new Readelf.Segment(expected[i].Type, segment.Offset, segment.VirtualAddress, segment.PhysicalAddress,
                segment.FileSize, segment.MemorySize, flags, segment.Alignment);
            Assert.Equal(expected[i], actual);
        }

        Assert.Equal(elf.Segments.Where(s => s.Type == ElfSegmentType.Load), elf.LoadSegments);
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Symbols_match_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var tables = Readelf.Symbols(path);

        CompareSymbols(elf, tables.GetValueOrDefault(".symtab", []), elf.Symbols, stripVersions: false);
        CompareSymbols(elf, tables.GetValueOrDefault(".dynsym", []), elf.DynamicSymbols, stripVersions: true);
        Assert.True(elf.Symbols.Count + elf.DynamicSymbols.Count > 0);
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Relocations_match_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var expected = Readelf.Relocations(path).Where(p => p.Value.Count > 0).ToDictionary(p => p.Key, p => p.Value);
        var actual = elf.RelocationSections.Where(r => r.Relocations.Count > 0).ToDictionary(r => r.Section.Name);

        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), actual.Keys.Order(StringComparer.Ordinal));
        foreach (var (name, rows) in expected)
        {
            var section = actual[name];
            Assert.Equal(rows.Count, section.Relocations.Count);
            for (var i = 0; i < rows.Count; i++)
            {
                var relocation = section.Relocations[i];
                var row = rows[i] with { SymbolName = WithoutVersion(rows[i].SymbolName) };
                Assert.Equal(row, new Readelf.Relocation(relocation.Offset, relocation.TypeName, relocation.SymbolName, relocation.Addend));
                Assert.Equal(relocation.SymbolIndex, (uint)relocation.Symbol.Index);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Notes_and_build_id_match_readelf(string sample)
    {
        var path = ElfSamples.PathOf(sample);
        var elf = ElfFile.Load(path);
        var (notes, buildId) = Readelf.Notes(path);

        Assert.Equal(notes, elf.Notes.Select(n => new Readelf.Note(n.Name, n.Descriptor.Length)));
        Assert.Equal(buildId, elf.BuildId);
        if (sample.StartsWith("sample", StringComparison.Ordinal) && !sample.EndsWith(".o", StringComparison.Ordinal))
        {
            Assert.NotNull(elf.BuildId);
        }
    }

    [Theory]
    [MemberData(nameof(Samples))]
    public void Section_data_and_lookups_agree_with_the_tables(string sample)
    {
        var elf = ElfFile.Load(ElfSamples.PathOf(sample));

        foreach (var section in elf.Sections)
        {
            var data = elf.GetSectionData(section);
            var expectedLength = section.Type is ElfSectionType.NoBits or ElfSectionType.Null ? 0 : (int)section.Size;
            Assert.Equal(expectedLength, data.Length);
            Assert.Same(elf.Sections.First(s => s.Name == section.Name), elf.FindSection(section.Name));
        }

        foreach (var symbol in elf.Symbols.Concat(elf.DynamicSymbols).Where(s => s.Name.Length > 0))
        {
            Assert.Contains(symbol, elf.FindSymbols(symbol.Name));
        }

        Assert.Null(elf.FindSection(".no-such-section"));
        Assert.Empty(elf.FindSymbols("no_such_symbol_anywhere"));
    }

    [Fact]
    public void Sample_object_has_the_symbols_and_relocations_the_source_implies()
    {
        var elf = ElfFile.Load(ElfSamples.PathOf("sample-function-sections.o"));

        var square = Assert.Single(elf.FindSymbols("sample_square"));
        Assert.Equal((ElfSymbolBinding.Local, ElfSymbolType.Function), (square.Binding, square.Type));
        Assert.Equal(".text.sample_square", elf.Sections[(int)square.SectionIndex].Name);

        var hidden = Assert.Single(elf.FindSymbols("sample_hidden_function"));
        Assert.Equal(ElfSymbolVisibility.Hidden, hidden.Visibility);

        var common = Assert.Single(elf.FindSymbols("sample_common_block"));
        Assert.Equal(ElfSymbol.CommonSection, common.SectionIndex);

        var puts = Assert.Single(elf.FindSymbols("puts"));
        Assert.Equal(ElfSymbol.UndefinedSection, puts.SectionIndex);

        var file = Assert.Single(elf.Symbols, s => s.Type == ElfSymbolType.File);
        Assert.Equal(ElfSymbol.AbsoluteSection, file.SectionIndex);

        var table = elf.RelocationSections.Single(r => r.Section.Name.EndsWith("sample_operations", StringComparison.Ordinal));
        Assert.Equal(table.Section.Name[".rela".Length..], table.TargetSection!.Name);
        Assert.Same(elf.FindSection(".symtab"), table.SymbolTable);
        Assert.All(table.Relocations, r => Assert.Equal(ElfRelocationType.Direct64, r.Type));
        Assert.Contains(table.Relocations, r => r.SymbolName == ".text.sample_square" && r.Symbol.Name.Length == 0);
    }

    [Fact]
    public void Payload_style_objects_carry_every_relocation_type_the_linker_handles()
    {
        var types = new[] { "sample-O0.o", "sample-fPIC.o", "sample-fno-plt.o", "sample-gotpcrel.o" }
            .SelectMany(s => ElfFile.Load(ElfSamples.PathOf(s)).RelocationSections)
            .SelectMany(r => r.Relocations)
            .Select(r => r.Type)
            .ToHashSet();

        ElfRelocationType[] expected =
        [
            ElfRelocationType.Direct64, ElfRelocationType.Pc32, ElfRelocationType.Plt32, ElfRelocationType.GotPcRel,
            ElfRelocationType.GotPcRelX, ElfRelocationType.RexGotPcRelX, ElfRelocationType.TpOff32, ElfRelocationType.TlsGd,
        ];
        Assert.All(expected, t => Assert.Contains(t, types));
    }

    private static void CompareSymbols(ElfFile elf, List<Readelf.Symbol> expected, IReadOnlyList<ElfSymbol> actual, bool stripVersions)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            var row = expected[i];
            var symbol = actual[i];
            Assert.Equal(row.Index, symbol.Index);
            // readelf -s shows a section symbol under the name of its section.
            var name = symbol.Type == ElfSymbolType.Section && symbol.Name.Length == 0
                ? elf.Sections[(int)symbol.SectionIndex].Name
                : symbol.Name;
            Assert.Equal(stripVersions ? WithoutVersion(row.Name) : row.Name, name);
            Assert.Equal(row.Value, symbol.Value);
            Assert.Equal(row.Size, symbol.Size);
            Assert.Equal(SymbolTypes[row.Type], symbol.Type);
            Assert.Equal(SymbolBindings[row.Binding], symbol.Binding);
            Assert.Equal(SymbolVisibilities[row.Visibility], symbol.Visibility);
            Assert.Equal(SectionIndexOf(row.SectionIndex), symbol.SectionIndex);
        }
    }

    private static uint SectionIndexOf(string readelfIndex) => readelfIndex switch
    {
        "UND" => ElfSymbol.UndefinedSection,
        "ABS" => ElfSymbol.AbsoluteSection,
        "COM" => ElfSymbol.CommonSection,
        _ => uint.Parse(readelfIndex, CultureInfo.InvariantCulture),
    };

    /// <summary>readelf shows dynamic symbols as <c>name@VERSION (n)</c>; the reader keeps the bare name.</summary>
    private static string WithoutVersion(string name)
    {
        var cut = name.IndexOfAny(['@', ' ']);
        return cut < 0 ? name : name[..cut];
    }

    private static string TypeNameOf(string readelfType, ElfSectionType actual) =>
        SectionTypes.TryGetValue(readelfType, out var type) && type == actual ? readelfType : $"ours: {actual}";

    private static string FlagLetters(ElfSectionAttributes flags) =>
        Sorted(new string([.. SectionFlagLetters.Where(f => flags.HasFlag(f.Flag)).Select(f => f.Letter)]));

    private static string Sorted(string letters) => new([.. letters.Order()]);
}
