using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Sites;

/// <summary><c>fixtures/sites/sites.c</c> linked in several ways, each built once per run; and its objdump listing.</summary>
internal static partial class SiteSamples
{
    public const string Source = "sites/sites.c";

    private static readonly Dictionary<string, string> Flags = new()
    {
        ["sites-pie"] = "-O2 -fpie -pie",
        ["sites-nopie"] = "-O2 -fno-pie -no-pie",
        ["sites.so"] = "-O2 -fPIC -shared",
    };

    private static readonly ConcurrentDictionary<string, Lazy<string>> Paths = new();

    /// <summary>Every sample name, for theories.</summary>
    public static TheoryData<string> All => [.. Flags.Keys];

    public static string PathOf(string name) =>
        Paths.GetOrAdd(name, n => new Lazy<string>(() => Gcc.Compile(Source,
            $"-std=c11 -Wall -Wextra -Werror -I {Path.Combine(AppContext.BaseDirectory, "include")} {Flags[n]}",
            Path.Combine("sites", n)))).Value;

    /// <summary>How many times the fixture source uses <paramref name="macro"/> in an asm statement.</summary>
    public static int CountUses(string macro) =>
        File.ReadLines(Gcc.FixturePath(Source)).Count(line => line.TrimStart().StartsWith("__asm__", StringComparison.Ordinal)
            && line.Contains(macro, StringComparison.Ordinal));

    /// <summary>One instruction of an objdump listing.</summary>
    public sealed record Instruction(ulong Address, List<byte> Bytes, string Text)
    {
        public string Mnemonic => Text.Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "";

        /// <summary>A NOP of any length as objdump prints it (the 2-byte one is <c>xchg %ax,%ax</c>, long ones carry prefixes).</summary>
        public bool IsNop => Text.Contains("nop", StringComparison.Ordinal) || Text.Replace(" ", "", StringComparison.Ordinal) == "xchg%ax,%ax";
    }

    /// <summary>Every instruction <c>objdump -d</c> prints for the file, by address.</summary>
    public static Dictionary<ulong, Instruction> Disassemble(string path)
    {
        var instructions = new Dictionary<ulong, Instruction>();
        Instruction? last = null;
        foreach (var line in ExternalTool.Run("objdump", "-d", "-w", "--insn-width=16", path).Split('\n'))
        {
            var match = ListingLine().Match(line);
            if (!match.Success)
                continue;
            var address = ulong.Parse(match.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            var bytes = match.Groups[2].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)
                .Select(b => byte.Parse(b, NumberStyles.HexNumber, CultureInfo.InvariantCulture)).ToList();
            var text = match.Groups[3].Value.Trim();
            if (text.Length == 0 && last is not null && last.Address + (ulong)last.Bytes.Count == address)
            {
                last.Bytes.AddRange(bytes);
                continue;
            }
            last = new Instruction(address, bytes, text);
            instructions[address] = last;
        }
        return instructions;
    }

    /// <summary>The instructions covering exactly [address, address + length), or fails if no boundary falls at the end.</summary>
    public static List<Instruction> Covering(Dictionary<ulong, Instruction> listing, ulong address, int length)
    {
        var covered = new List<Instruction>();
        var at = address;
        while (at < address + (ulong)length)
        {
            Assert.True(listing.TryGetValue(at, out var instruction), $"objdump shows no instruction starting at 0x{at:x}");
            covered.Add(instruction);
            at += (ulong)instruction.Bytes.Count;
        }
        Assert.Equal(address + (ulong)length, at);
        return covered;
    }

    [GeneratedRegex(@"^\s*([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*(.*)$")]
    private static partial Regex ListingLine();
}
