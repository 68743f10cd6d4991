using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Elf;

/// <summary>Runs binutils' <c>readelf -W</c> on a file and parses its text into plain rows to compare with.</summary>
internal static partial class Readelf
{
    public sealed record Section(int Index, string Name, string Type, ulong Address, ulong Offset, ulong Size,
        ulong EntrySize, string Flags, uint Link, uint Info, ulong Alignment);

    public sealed record Segment(string Type, ulong Offset, ulong VirtualAddress, ulong PhysicalAddress,
        ulong FileSize, ulong MemorySize, string Flags, ulong Alignment);

    public sealed record Symbol(int Index, ulong Value, ulong Size, string Type, string Binding, string Visibility,
        string SectionIndex, string Name);

    public sealed record Relocation(ulong Offset, string Type, string SymbolName, long Addend);

    public sealed record Note(string Owner, int DescriptorSize);

    public static string Run(string options, string path) => ExternalTool.Run("readelf", "-W", options, path);

    public static (string Type, ulong Entry) Header(string path)
    {
        var text = Run("-h", path);
        var type = TypeLine().Match(text).Groups[1].Value;
        var entry = Hex(EntryLine().Match(text).Groups[1].Value);
        return (type, entry);
    }

    public static List<Section> Sections(string path) =>
        [.. Lines(Run("-S", path)).Select(l => SectionLine().Match(l)).Where(m => m.Success).Select(m => new Section(
            int.Parse(m.Groups["nr"].Value, CultureInfo.InvariantCulture), m.Groups["name"].Value, m.Groups["type"].Value,
            Hex(m.Groups["addr"].Value), Hex(m.Groups["off"].Value), Hex(m.Groups["size"].Value), Hex(m.Groups["es"].Value),
            m.Groups["flg"].Value, uint.Parse(m.Groups["lk"].Value, CultureInfo.InvariantCulture),
            uint.Parse(m.Groups["inf"].Value, CultureInfo.InvariantCulture), ulong.Parse(m.Groups["al"].Value, CultureInfo.InvariantCulture)))];

    public static List<Segment> Segments(string path) =>
        [.. Lines(Run("-l", path)).Select(l => SegmentLine().Match(l)).Where(m => m.Success).Select(m => new Segment(
            m.Groups["type"].Value, Hex(m.Groups["off"].Value), Hex(m.Groups["va"].Value), Hex(m.Groups["pa"].Value),
            Hex(m.Groups["fs"].Value), Hex(m.Groups["ms"].Value), m.Groups["flg"].Value.Replace(" ", "", StringComparison.Ordinal),
            Hex(m.Groups["al"].Value)))];

    /// <summary>Symbols per symbol table section name (<c>.symtab</c>, <c>.dynsym</c>).</summary>
    public static Dictionary<string, List<Symbol>> Symbols(string path)
    {
        var tables = new Dictionary<string, List<Symbol>>();
        List<Symbol>? current = null;
        foreach (var line in Lines(Run("-s", path)))
        {
            var header = SymbolTableHeader().Match(line);
            if (header.Success)
            {
                current = [];
                tables[header.Groups[1].Value] = current;
                continue;
            }

            var m = SymbolLine().Match(line);
            if (m.Success && current != null)
            {
                var size = m.Groups["size"].Value;
                current.Add(new Symbol(
                    int.Parse(m.Groups["num"].Value, CultureInfo.InvariantCulture), Hex(m.Groups["val"].Value),
                    size.StartsWith("0x", StringComparison.Ordinal) ? Hex(size[2..]) : ulong.Parse(size, CultureInfo.InvariantCulture),
                    m.Groups["type"].Value, m.Groups["bind"].Value, m.Groups["vis"].Value, m.Groups["ndx"].Value,
                    m.Groups["name"].Value));
            }
        }

        return tables;
    }

    /// <summary>Relocations per relocation section name; sections readelf shows in another format (RELR) stay empty.</summary>
    public static Dictionary<string, List<Relocation>> Relocations(string path)
    {
        var sections = new Dictionary<string, List<Relocation>>();
        List<Relocation>? current = null;
        foreach (var line in Lines(Run("-r", path)))
        {
            var header = RelocationSectionHeader().Match(line);
            if (header.Success)
            {
                current = [];
                sections[header.Groups[1].Value] = current;
                continue;
            }

            if (current == null)
            {
                continue;
            }

            var withSymbol = RelocationWithSymbol().Match(line);
            if (withSymbol.Success)
            {
                var addend = (long)Hex(withSymbol.Groups["add"].Value);
                current.Add(new Relocation(Hex(withSymbol.Groups["off"].Value), withSymbol.Groups["type"].Value,
                    withSymbol.Groups["name"].Value, withSymbol.Groups["sign"].Value == "-" ? -addend : addend));
                continue;
            }

            var withoutSymbol = RelocationWithoutSymbol().Match(line);
            if (withoutSymbol.Success)
            {
                var text = withoutSymbol.Groups["add"].Value;
                var addend = text.StartsWith('-') ? -(long)Hex(text[1..]) : (long)Hex(text);
                current.Add(new Relocation(Hex(withoutSymbol.Groups["off"].Value), withoutSymbol.Groups["type"].Value, "", addend));
            }
        }

        return sections;
    }

    public static (List<Note> Notes, string? BuildId) Notes(string path)
    {
        var text = Run("-n", path);
        var notes = Lines(text).Select(l => NoteLine().Match(l)).Where(m => m.Success)
            .Select(m => new Note(m.Groups["owner"].Value, (int)Hex(m.Groups["size"].Value))).ToList();
        var buildId = BuildIdLine().Match(text);
        return (notes, buildId.Success ? buildId.Groups[1].Value : null);
    }

    private static string[] Lines(string text) => text.Split('\n');

    private static ulong Hex(string text) => ulong.Parse(text, NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^\s*Type:\s+(\S+)", RegexOptions.Multiline)]
    private static partial Regex TypeLine();

    [GeneratedRegex(@"^\s*Entry point address:\s+0x([0-9a-f]+)", RegexOptions.Multiline)]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"^\s*\[\s*(?<nr>\d+)\]\s(?<name>.*?)\s+(?<type>[A-Z_0-9]+(?: SECTION INDICES)?|LOOS\+0x[0-9a-f]+|LOPROC\+0x[0-9a-f]+|<unknown>: [0-9a-f]+)\s+(?<addr>[0-9a-f]{16})\s(?<off>[0-9a-f]+)\s(?<size>[0-9a-f]+)\s(?<es>[0-9a-f]+)\s+(?<flg>[A-Za-z]*)\s+(?<lk>\d+)\s+(?<inf>\d+)\s+(?<al>\d+)$")]
    private static partial Regex SectionLine();

    [GeneratedRegex(@"^\s+(?<type>[A-Z_0-9+x]+)\s+0x(?<off>[0-9a-f]+)\s+0x(?<va>[0-9a-f]+)\s+0x(?<pa>[0-9a-f]+)\s+0x(?<fs>[0-9a-f]+)\s+0x(?<ms>[0-9a-f]+)\s(?<flg>[RWE ]{3})\s(?:0x)?(?<al>[0-9a-f]+)$")]
    private static partial Regex SegmentLine();

    [GeneratedRegex(@"^Symbol table '([^']+)' contains")]
    private static partial Regex SymbolTableHeader();

    [GeneratedRegex(@"^\s*(?<num>\d+):\s(?<val>[0-9a-f]{16})\s+(?<size>\d+|0x[0-9a-f]+)\s(?<type>\S+)\s+(?<bind>\S+)\s+(?<vis>\S+)\s+(?<ndx>\S+)\s?(?<name>.*)$")]
    private static partial Regex SymbolLine();

    [GeneratedRegex(@"^Relocation section '([^']+)' at offset")]
    private static partial Regex RelocationSectionHeader();

    [GeneratedRegex(@"^(?<off>[0-9a-f]{16})\s+(?<info>[0-9a-f]{16})\s+(?<type>\S+)\s+(?<val>[0-9a-f]{16})\s+(?<name>.*?) (?<sign>[+-]) (?<add>[0-9a-f]+)$")]
    private static partial Regex RelocationWithSymbol();

    [GeneratedRegex(@"^(?<off>[0-9a-f]{16})\s+(?<info>[0-9a-f]{16})\s+(?<type>\S+)\s+(?<add>-?[0-9a-f]+)$")]
    private static partial Regex RelocationWithoutSymbol();

    [GeneratedRegex(@"^\s+(?<owner>\S+)\s+0x(?<size>[0-9a-f]{8})\s")]
    private static partial Regex NoteLine();

    [GeneratedRegex(@"Build ID: ([0-9a-f]+)")]
    private static partial Regex BuildIdLine();
}
