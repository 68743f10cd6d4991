using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Elf;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Elf;

/// <summary>
/// <see cref="CallFrameInfo"/> against <c>readelf --debug-dump=frames-interp</c>: every row of every FDE of a gcc-built
/// program and of the system's libc (its hand-written assembly, signal trampoline and PLT included) must come out as
/// readelf decodes it.
/// </summary>
public partial class CallFrameInfoTests
{
    private static readonly string[] RegisterNames = ["rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "ra"];

    private static string Program() => RunningTarget.Build("targets/unwinding.c", $"-O2 -pthread {Gcc.FixturePath("targets/nocfi.S")}");

    private const string Libc = "/lib/x86_64-linux-gnu/libc.so.6";

    [Theory]
    [InlineData("program")]
    [InlineData(Libc)]
    public void Every_row_matches_readelf(string which)
    {
        var path = which == "program" ? Program() : which;
        var info = CallFrameInfo.Read(ElfFile.Load(path));
        var rows = ReadelfRows(path);
        Assert.True(info.FromHeader, ".eh_frame_hdr's table is used when there is one");
        Assert.InRange(info.Count, 10, int.MaxValue);
        Assert.InRange(rows.Count, 50, int.MaxValue);

        var mismatches = new List<string>();
        foreach (var (pc, cfa, registers) in rows)
        {
            if (!info.TryFindRow(pc, out var row, out var why))
            {
                mismatches.Add($"0x{pc:x}: {why}");
                continue;
            }
            var ours = row.CfaExpressionLength != 0 ? "exp" : $"{RegisterNames[row.CfaRegister]}{(row.CfaOffset >= 0 ? "+" : "")}{row.CfaOffset}";
            if (ours != cfa)
                mismatches.Add($"0x{pc:x}: CFA {ours}, readelf {cfa}");
            foreach (var (register, rule) in registers)
            {
                var r = row.Rules[register];
                var same = rule switch
                {
                    "u" => r.Kind is RuleKind.Undefined or RuleKind.SameValue, // readelf prints u for a column not yet set too
                    "s" => r.Kind == RuleKind.SameValue,
                    "exp" => r.Kind == RuleKind.Expression,
                    "vexp" => r.Kind == RuleKind.ValueExpression,
                    _ when rule.StartsWith('c') => r.Kind == RuleKind.Offset && r.Value == long.Parse(rule[1..], CultureInfo.InvariantCulture),
                    _ when rule.StartsWith('v') => r.Kind == RuleKind.ValueOffset && r.Value == long.Parse(rule[1..], CultureInfo.InvariantCulture),
                    _ => r.Kind == RuleKind.Register && RegisterNames[(int)r.Value] == rule,
                };
                if (!same)
                    mismatches.Add($"0x{pc:x}: {RegisterNames[register]} {r.Kind} {r.Value}, readelf {rule}");
            }
        }
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} of {rows.Count} rows differ: {string.Join("; ", mismatches.Take(10))}");
    }

    // The PLT's CFA is rsp + 8 + ((rip & 15) >= 11) * 8: 8 more once the entry's push has run (gcc's and binutils' expression).
    [Fact]
    public void The_plt_cfa_expression_depends_on_where_in_the_entry_rip_is()
    {
        var elf = ElfFile.Load(Program());
        var info = CallFrameInfo.Read(elf);
        var plt = elf.FindSection(".plt")!;
        var entry = plt.Address + 16; // the first entry after PLT0
        Assert.True(info.TryFindRow(entry, out var row, out var why), why);
        Assert.NotEqual(0, row.CfaExpressionLength);
        var registers = new ulong[17];
        registers[7] = 0x7000_0000;
        for (ulong offset = 0; offset < 16; offset++)
        {
            registers[16] = entry + offset;
            Assert.True(DwarfExpression.TryEvaluate(info.Data.Slice(row.CfaExpressionOffset, row.CfaExpressionLength), registers, (1u << 17) - 1, NoMemory.Instance, null, out var cfa));
            Assert.Equal(registers[7] + 8 + ((offset & 15) >= 11 ? 8UL : 0), cfa);
        }
    }

    [Fact]
    public void An_expression_using_a_register_not_known_fails()
    {
        // DW_OP_breg7 8 (rsp + 8) with rsp unknown.
        Assert.False(DwarfExpression.TryEvaluate([0x77, 0x08], new ulong[17], 0, NoMemory.Instance, null, out _));
        Assert.True(DwarfExpression.TryEvaluate([0x77, 0x08], new ulong[17], 1u << 7, NoMemory.Instance, null, out var value));
        Assert.Equal(8UL, value);
        // DW_OP_deref of an address that cannot be read.
        Assert.False(DwarfExpression.TryEvaluate([0x30, 0x06], new ulong[17], 0, NoMemory.Instance, null, out _));
    }

    [Fact]
    public void An_address_no_fde_covers_has_no_row()
    {
        var info = CallFrameInfo.Read(ElfFile.Load(Program()));

        Assert.False(info.TryFindRow(0x10, out _, out var why));
        Assert.Equal("no CFI", why);
        Assert.False(CallFrameInfo.Empty.TryFindRow(0x1000, out _, out _));
    }

    [Fact]
    public void A_function_s_fde_gives_its_size_as_its_symbol_does()
    {
        var elf = ElfFile.Load(RunningTarget.Build("targets/ipara.c", "-O2 -pthread -DSWITCH"));
        var info = CallFrameInfo.Read(elf);
        var functions = elf.Symbols.Where(s => s.Type == ElfSymbolType.Function && s.Size > 0 && s.Name is "scale" or "check" or "worker" or "main").ToList();

        Assert.Equal(4, functions.Count);
        foreach (var function in functions)
        {
            Assert.True(info.TryFindFunction(function.Value, out var size), function.Name);
            Assert.Equal((function.Name, function.Size), (function.Name, size));
            Assert.False(info.TryFindFunction(function.Value + 1, out _), "an FDE is found by where it begins only");
        }
        Assert.False(CallFrameInfo.Empty.TryFindFunction(functions[0].Value, out _));
    }

    private sealed class NoMemory : IWordReader
    {
        public static NoMemory Instance { get; } = new();

        public bool TryReadWord(ulong address, out ulong value)
        {
            value = 0;
            return false;
        }
    }

    /// <summary>Each row readelf prints: its address, its CFA, and each column's rule; an FDE without rows has its CIE's at its start.</summary>
    private static List<(ulong Pc, string Cfa, List<(int Register, string Rule)> Registers)> ReadelfRows(string path)
    {
        // readelf exits 1 on Debian's libc without saying why (it follows the debug link); its output is whole.
        var text = ExternalTool.Run("sh", "-c", "readelf --debug-dump=frames-interp \"$0\" 2>/dev/null; true", path);
        var rows = new List<(ulong, string, List<(int, string)>)>();
        var cieRows = new Dictionary<string, (string Cfa, List<(int, string)> Registers)>();
        string[]? columns = null;
        string? cie = null;
        ulong? fdeStart = null;
        var fdeHasRows = false;
        foreach (var line in text.Split('\n'))
        {
            if (CieLine().Match(line) is { Success: true } cieMatch)
            {
                Flush();
                cie = cieMatch.Groups[1].Value;
                fdeStart = null;
                columns = null;
                continue;
            }
            if (FdeLine().Match(line) is { Success: true } fde)
            {
                Flush();
                cie = fde.Groups[1].Value;
                fdeStart = ulong.Parse(fde.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                fdeHasRows = false;
                columns = null;
                continue;
            }
            var tokens = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (tokens.Length >= 2 && tokens[0] == "LOC")
            {
                columns = tokens;
                continue;
            }
            if (columns is null || tokens.Length != columns.Length || !ulong.TryParse(tokens[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var loc))
                continue;
            var registers = new List<(int, string)>();
            for (var i = 2; i < columns.Length; i++)
                if (Array.IndexOf(RegisterNames, columns[i]) is var number and >= 0)
                    registers.Add((number, tokens[i]));
            if (fdeStart is null)
            {
                cieRows[cie!] = (tokens[1], registers);
            }
            else
            {
                rows.Add((loc, tokens[1], registers));
                fdeHasRows = true;
            }
        }
        Flush();
        return rows;

        void Flush()
        {
            if (fdeStart is { } start && !fdeHasRows && cie is not null && cieRows.TryGetValue(cie, out var initial))
                rows.Add((start, initial.Cfa, initial.Registers));
            fdeStart = null;
        }
    }

    [GeneratedRegex(@"^([0-9a-f]{8}) [0-9a-f]+ [0-9a-f]+ CIE")]
    private static partial Regex CieLine();

    [GeneratedRegex(@"FDE cie=([0-9a-f]{8}) pc=([0-9a-f]+)\.\.")]
    private static partial Regex FdeLine();
}
