using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using FsCheck;
using FsCheck.Fluent;
using LivePatch.Elf;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Elf;

/// <summary>
/// The inlined copies <see cref="DwarfInlines"/> finds in executables gcc built, against what the file's symbols and
/// readelf's dump of its <c>.debug_info</c> say.
/// </summary>
public partial class DwarfInlinesTests
{
    private const string Cloned = "live/clones/cloned.c";

    private static ElfFile Build(string source, string flags, out string path)
    {
        path = Gcc.Compile(source, flags, Path.Combine(ExternalTool.ScratchDirectory("dwarf"), Path.GetFileNameWithoutExtension(source)));
        return ElfFile.Load(path);
    }

    [Theory]
    [InlineData("-O2 -g", 5)]
    [InlineData("-O2 -gdwarf-4", 4)]
    [InlineData("-O2 -g -gz=zlib", 5)]
    [InlineData("-O2 -gdwarf-4 -gz=zlib", 4)]
    [InlineData("-O2 -g -fPIE -pie", 5)]
    public void The_test_gcc_inlines_from_a_split_function_is_found_in_each_caller(string flags, int version)
    {
        var elf = Build(Cloned, flags, out _);

        var scan = DwarfInlines.Find(elf, new HashSet<string> { "lookup" });

        Assert.NotNull(scan);
        Assert.Equal(version, scan.Version);
        Assert.False(scan.SplitUnits);
        Assert.Equal(2, scan.Copies.Count);
        Assert.All(scan.Copies, c => Assert.Equal("lookup", c.Function));
        Assert.Equal(["lookup_first", "lookup_second"], scan.Copies.Select(c => Holder(elf, c.Address)).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_function_never_inlined_has_no_copies_and_a_file_without_debug_info_gives_null()
    {
        var withDebug = Build(Cloned, "-O2 -g", out _);
        var without = Build(Cloned, "-O2", out _);

        Assert.Empty(DwarfInlines.Find(withDebug, new HashSet<string> { "scale", "answer", "twin" })!.Copies);
        Assert.Null(DwarfInlines.Find(without, new HashSet<string> { "lookup" }));
    }

    [Fact]
    public void Split_dwarf_is_said_to_be_unread()
    {
        var elf = Build(Cloned, "-O2 -g -gsplit-dwarf", out _);

        var scan = DwarfInlines.Find(elf, new HashSet<string> { "lookup" });

        Assert.True(scan!.SplitUnits);
        Assert.Empty(scan.Copies);
    }

    [Theory]
    [InlineData(Cloned, "-O2 -g")]
    [InlineData(Cloned, "-O2 -gdwarf-4")]
    [InlineData("targets/calls.c", "-O2 -g -pthread")]
    [InlineData("targets/calls.c", "-O3 -g -pthread")]
    [InlineData("targets/calls.c", "-O3 -gdwarf-4 -pthread")]
    [InlineData("sites/locks_target.c", "-O3 -g -pthread")]
    [InlineData("targets/trio.c", "-O2 -g -pthread")]
    public void Every_inlined_subroutine_readelf_dumps_is_found_with_its_origin_and_entry(string source, string flags)
    {
        var extra = source == "targets/calls.c" ? $" {Gcc.FixturePath("targets/redzone.S")}" : "";
        var include = source.StartsWith("sites/", StringComparison.Ordinal) ? $" -I {Path.Combine(AppContext.BaseDirectory, "include")}" : "";
        var elf = Build(source, flags + extra + include, out var path);
        var expected = ReadelfInlined(path);

        var scan = DwarfInlines.Find(elf, expected.Select(e => e.Function).ToHashSet());

        Assert.NotEmpty(expected);
        Assert.Equal(expected.Count, scan!.Copies.Count);
        foreach (var (want, got) in expected.Zip(scan.Copies))
        {
            Assert.Equal(want.Function, got.Function);
            if (want.Address is { } address)
                Assert.Equal(address, got.Address);
        }
    }

    [Fact]
    public void A_lying_unit_is_refused_naming_what_and_where()
    {
        var path = Gcc.Compile(Cloned, "-O2 -g", Path.Combine(ExternalTool.ScratchDirectory("dwarf"), "cloned"));
        var bytes = File.ReadAllBytes(path);
        var info = ElfFile.Parse(bytes).FindSection(".debug_info")!;
        var unit = (int)info.Offset;

        var version = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(version.AsSpan(unit + 4), 9);
        var length = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(length.AsSpan(unit), (uint)info.Size + 100);
        var abbreviation = (byte[])bytes.Clone();
        abbreviation[unit + 12] = 0x7f; // the unit's first entry: an abbreviation code its table lacks

        var badVersion = Assert.Throws<ElfFormatException>(() => DwarfInlines.Find(ElfFile.Parse(version), new HashSet<string> { "lookup" }));
        var badLength = Assert.Throws<ElfFormatException>(() => DwarfInlines.Find(ElfFile.Parse(length), new HashSet<string> { "lookup" }));
        var badCode = Assert.Throws<ElfFormatException>(() => DwarfInlines.Find(ElfFile.Parse(abbreviation), new HashSet<string> { "lookup" }));

        Assert.StartsWith("DWARF .debug_info+0x6: unit at 0x0 has DWARF version 9; versions 2 to 5 are read", badVersion.Message, StringComparison.Ordinal);
        Assert.Contains("is 0x", badLength.Message, StringComparison.Ordinal);
        Assert.Contains("past the end of .debug_info", badLength.Message, StringComparison.Ordinal);
        Assert.Contains("entry at 0xc uses abbreviation 127, which table 0x0 does not define", badCode.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Property: however the bytes of <c>.debug_info</c>, <c>.debug_abbrev</c> or <c>.debug_str</c> are flipped or
    /// overwritten, the search returns or throws <see cref="ElfFormatException"/>; nothing else escapes and nothing hangs
    /// (it runs on whatever binary a target maps).
    /// </summary>
    [Theory]
    [InlineData("-O2 -g")]
    [InlineData("-O2 -gdwarf-4")]
    public async Task Mutated_dwarf_gives_copies_or_ElfFormatException_only(string flags)
    {
        const int cases = 2000;
        var path = Gcc.Compile(Cloned, flags, Path.Combine(ExternalTool.ScratchDirectory("dwarf"), "cloned"));
        var original = File.ReadAllBytes(path);
        var sections = new[] { ".debug_info", ".debug_abbrev", ".debug_str" }.Select(n => ElfFile.Parse(original).FindSection(n)!).ToArray();
        var mutations =
            from section in Gen.Choose(0, sections.Length - 1)
            from count in Gen.Choose(1, 8)
            from seed in Gen.Choose(0, int.MaxValue)
            select (section, count, seed);
        var found = 0;
        var refused = 0;
        var property = Prop.ForAll(Arb.From(mutations), mutation =>
        {
            var (index, count, seed) = mutation;
            var random = new Random(seed);
            var bytes = (byte[])original.Clone();
            var section = sections[index];
            for (var i = 0; i < count; i++)
            {
                var at = (int)section.Offset + random.Next((int)section.Size);
                bytes[at] = random.Next(3) == 0 ? (byte)0xff : (byte)random.Next(256);
            }
            var clock = Stopwatch.StartNew();
            try
            {
                DwarfInlines.Find(ElfFile.Parse(bytes), new HashSet<string> { "lookup", "scale", "main" });
                found++;
            }
            catch (ElfFormatException)
            {
                refused++;
            }
            if (clock.Elapsed > TimeSpan.FromSeconds(2))
                throw new TimeoutException($"{mutation} took {clock.Elapsed}");
        });

        var run = Task.Run(() => Check.One(Config.QuickThrowOnFailure.WithMaxTest(cases).WithQuietOnSuccess(true), property));

        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60))) == run, "the property run did not finish within 60 s: a search hangs");
        await run;
        Assert.Equal(cases, found + refused);
        Assert.True(refused > 0 && found > 0, $"{found} searches returned, {refused} refused");
    }

    // The function symbol whose code holds the address.
    private static string Holder(ElfFile elf, ulong address) =>
        elf.Symbols.Single(s => s.Type == ElfSymbolType.Function && s.Size > 0 && address >= s.Value && address < s.Value + s.Size).Name;

    /// <summary>Every <c>DW_TAG_inlined_subroutine</c> in readelf's dump, in order: its origin's name, and its entry or low pc.</summary>
    private static List<(string Function, ulong? Address)> ReadelfInlined(string path)
    {
        var dump = ExternalTool.Run("readelf", "--debug-dump=info", path);
        var entries = new Dictionary<ulong, Dictionary<string, string>>();
        var order = new List<(ulong Offset, string Tag)>();
        Dictionary<string, string>? current = null;
        foreach (var line in dump.Split('\n'))
        {
            if (EntryLine().Match(line) is { Success: true } entry)
            {
                var offset = ulong.Parse(entry.Groups["offset"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                entries[offset] = current = [];
                order.Add((offset, entry.Groups["tag"].Value));
            }
            else if (current is not null && AttributeLine().Match(line) is { Success: true } attribute)
            {
                current[attribute.Groups["name"].Value] = attribute.Groups["value"].Value.Trim();
            }
        }
        string? NameOf(ulong offset)
        {
            string? name = null;
            for (var hop = 0; hop < 8 && entries.TryGetValue(offset, out var attributes); hop++)
            {
                if (attributes.TryGetValue("DW_AT_linkage_name", out var linkage))
                    return Text(linkage);
                name ??= attributes.TryGetValue("DW_AT_name", out var own) ? Text(own) : null;
                var origin = attributes.GetValueOrDefault("DW_AT_abstract_origin") ?? attributes.GetValueOrDefault("DW_AT_specification");
                if (origin is null)
                    break;
                offset = Reference(origin);
            }
            return name;
        }
        var inlined = new List<(string, ulong?)>();
        foreach (var (offset, tag) in order.Where(o => o.Tag == "DW_TAG_inlined_subroutine"))
        {
            var attributes = entries[offset];
            var name = NameOf(Reference(attributes["DW_AT_abstract_origin"]));
            if (name is null)
                continue;
            var pc = attributes.GetValueOrDefault("DW_AT_entry_pc") ?? attributes.GetValueOrDefault("DW_AT_low_pc");
            inlined.Add((name, pc is null ? null : ulong.Parse(pc.Replace("0x", "", StringComparison.Ordinal), NumberStyles.HexNumber, CultureInfo.InvariantCulture)));
        }
        return inlined;
    }

    // "(indirect string, offset: 0x1a): lookup" or "lookup".
    private static string Text(string value) => value.StartsWith('(') ? value[(value.IndexOf("): ", StringComparison.Ordinal) + 3)..] : value;

    // "<0x580>"
    private static ulong Reference(string value) =>
        ulong.Parse(ReferenceValue().Match(value).Groups["offset"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"<(?:0x)?(?<offset>[0-9a-f]+)>")]
    private static partial Regex ReferenceValue();

    [GeneratedRegex(@"^\s*<\d+><(?<offset>[0-9a-f]+)>: Abbrev Number: \d+ \((?<tag>DW_TAG_\w+)\)")]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"^\s*<[0-9a-f]+>\s+(?<name>DW_AT_\w+)\s*: (?<value>.*)$")]
    private static partial Regex AttributeLine();
}
