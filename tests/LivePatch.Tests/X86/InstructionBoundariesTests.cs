using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

public partial class InstructionBoundariesTests
{
    // code | bytes needed | covered length | instructions | where flow ends early (-1: it does not)
    [Theory]
    [InlineData("55 48 89 e5 48 83 ec 10", 5, 8, 3, -1)]       // push rbp; mov rbp,rsp; sub rsp,16
    [InlineData("48 83 ec 18 48 8b 07", 5, 7, 2, -1)]          // sub rsp,24; mov rax,[rdi]
    [InlineData("e9 10 00 00 00 cc", 5, 5, 1, -1)]             // a jmp that ends exactly at 5 bytes
    [InlineData("b8 2a 00 00 00 c3", 5, 5, 1, -1)]             // mov eax,42 fills the 5 bytes
    [InlineData("31 c0 c3 0f 1f 00", 5, 6, 3, 3)]              // xor eax,eax; ret: a 3-byte function
    [InlineData("c3 66 2e 0f 1f 84 00 00 00 00 00", 5, 11, 2, 1)]
    [InlineData("0f 0b 90 90 90 90", 5, 5, 4, 2)]              // ud2 ends flow
    [InlineData("48 8b 05 00 00 00 00", 1, 7, 1, -1)]
    public void Whole_instructions_cover_the_bytes_asked_for(string code, int needed, int length, int count, int flowEnd)
    {
        var covered = InstructionBoundaries.Cover(Decoded.Hex(code), 0x401000, needed);

        Assert.Equal(length, covered.Length);
        Assert.Equal(count, covered.Instructions.Count);
        Assert.Equal(flowEnd < 0 ? null : flowEnd, covered.FlowEndOffset);
        Assert.Equal(0x401000UL, covered.Instructions[0].IP);
    }

    [Theory]
    [InlineData("48 8b", "cut off")]          // mov with its operands missing
    [InlineData("55 48 89", "cut off")]
    [InlineData("55 90", "ends after 2 bytes")]
    public void Code_that_ends_too_soon_is_refused_with_the_address(string code, string text)
    {
        var error = Assert.Throws<InvalidInstructionException>(() => InstructionBoundaries.Cover(Decoded.Hex(code), 0x401000, 5));

        Assert.Contains(text, error.Message, StringComparison.Ordinal);
        Assert.InRange(error.Address, 0x401000UL, 0x401002UL);
    }

    [Fact]
    public void Invalid_bytes_are_refused_with_their_address()
    {
        var error = Assert.Throws<InvalidInstructionException>(() =>
            InstructionBoundaries.Cover(Decoded.Hex("90 06 90 90 90 90 90 90 90 90 90 90 90 90 90 90 90"), 0x401000, 5));

        Assert.Equal(0x401001UL, error.Address);
        Assert.Contains("0x401001", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("f3 0f 1e fa 55", true, 4)]
    [InlineData("f3 0f 1e fb 55", false, 0)]  // endbr32
    [InlineData("55 f3 0f 1e fa", false, 0)]
    [InlineData("f3 0f 1e", false, 0)]
    public void Endbr64_is_found_only_at_the_entry(string code, bool starts, int offset)
    {
        Assert.Equal(starts, InstructionBoundaries.StartsWithEndbr64(Decoded.Hex(code)));
        Assert.Equal(offset, InstructionBoundaries.PatchableEntryOffset(Decoded.Hex(code)));
    }

    // On real gcc output, the boundaries after endbr64 are those objdump sees.
    [Theory]
    [InlineData("-O0")]
    [InlineData("-O2")]
    [InlineData("-Os")]
    public void Boundaries_in_gcc_code_match_objdump(string optimization)
    {
        var directory = ExternalTool.ScratchDirectory("boundaries");
        var obj = Path.Combine(directory, "prologues.o");
        ExternalTool.Run("gcc", "-c", optimization, "-fcf-protection=full", "-ffunction-sections",
            Path.Combine(AppContext.BaseDirectory, "fixtures", "x86", "prologues.c"), "-o", obj);
        var functions = ObjdumpFunctions(ExternalTool.Run("objdump", "-d", "-w", obj));
        Assert.True(functions.Count >= 7, $"objdump listed {functions.Count} functions");

        foreach (var (name, instructions) in functions)
        {
            var code = instructions.SelectMany(i => i.Bytes).ToArray();
            Assert.True(InstructionBoundaries.StartsWithEndbr64(code), $"{name} starts with endbr64");
            var entry = InstructionBoundaries.PatchableEntryOffset(code);
            var needed = Math.Min(5, code.Length - entry);

            var covered = InstructionBoundaries.Cover(code.AsSpan(entry), (ulong)entry, needed);

            var expected = 0;
            var index = 1;
            while (expected < needed)
                expected += instructions[index++].Bytes.Length;
            Assert.Equal(expected, covered.Length);
            Assert.Equal(index - 1, covered.Instructions.Count);
        }
    }

    private sealed record ObjdumpInstruction(ulong Address, byte[] Bytes);

    private static Dictionary<string, List<ObjdumpInstruction>> ObjdumpFunctions(string listing)
    {
        var functions = new Dictionary<string, List<ObjdumpInstruction>>();
        List<ObjdumpInstruction>? current = null;
        foreach (var line in listing.Split('\n'))
        {
            var header = FunctionHeader().Match(line);
            if (header.Success)
            {
                current = functions[header.Groups[1].Value] = [];
                continue;
            }
            var row = InstructionRow().Match(line);
            if (row.Success && current is not null)
                current.Add(new ObjdumpInstruction(ulong.Parse(row.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture),
                    Decoded.Hex(row.Groups[2].Value.Trim())));
        }
        return functions;
    }

    [GeneratedRegex(@"^[0-9a-f]+ <([^>]+)>:$")]
    private static partial Regex FunctionHeader();

    [GeneratedRegex(@"^\s+([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*\t")]
    private static partial Regex InstructionRow();
}
