using System.Buffers.Binary;
using System.Globalization;
using Iced.Intel;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

public class RelocatorTests
{
    public sealed record Row(string Name, ulong From, ulong To, ulong? ContinueAt, byte[] Code, string Expected)
    {
        public override string ToString() => Name;
    }

    public static TheoryData<Row> Rows()
    {
        var data = new TheoryData<Row>();
        foreach (var line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "X86", "Data", "relocations.txt")))
        {
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            var f = line.Split('|', StringSplitOptions.TrimEntries);
            data.Add(new Row(f[0], Address(f[1]), Address(f[2]), f[3] == "-" ? null : Address(f[3]), Decoded.Hex(f[4]), f[5]));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void Code_moves_as_the_table_says(Row c)
    {
        if (c.Expected.StartsWith("error ", StringComparison.Ordinal))
        {
            var (type, text) = (c.Expected[6..c.Expected.IndexOf(':', StringComparison.Ordinal)], c.Expected[(c.Expected.IndexOf(':', StringComparison.Ordinal) + 2)..]);
            var error = Assert.ThrowsAny<Exception>(() => Relocator.Relocate(c.Code, c.From, c.To, c.ContinueAt));
            Assert.Equal(type, error.GetType().Name);
            Assert.Contains(text, error.Message, StringComparison.Ordinal);
            return;
        }

        var moved = Relocator.Relocate(c.Code, c.From, c.To, c.ContinueAt);

        Assert.Equal(Decoded.ToHex(Decoded.Hex(c.Expected)), Decoded.ToHex(moved.Bytes.Span));
        AssertSameMeaning(c, moved);
    }

    [Fact]
    public void Each_moved_instruction_maps_to_where_it_starts_in_the_new_code()
    {
        // je far; call far; nop — the first two become sequences through 64-bit slots.
        var moved = Relocator.Relocate(Decoded.Hex("74 10 e8 00 01 00 00 90"), 0x401000, 0x7f0000000000, 0x401008);

        Assert.Equal(0x7f0000000000UL, moved.MapAddress(0x401000));
        Assert.Equal(0x7f0000000008UL, moved.MapAddress(0x401002)); // after jne +6; jmp [rip+slot]
        Assert.Equal(0x7f000000000eUL, moved.MapAddress(0x401007)); // after call [rip+slot]
        Assert.Null(moved.MapAddress(0x401001));                    // not an instruction start
    }

    // Every original instruction must, at its new place, reach the same targets and memory.
    private static void AssertSameMeaning(Row c, RelocatedCode moved)
    {
        var bytes = moved.Bytes.ToArray();
        foreach (var original in Decoded.All(c.Code, c.From))
        {
            var at = moved.MapAddress(original.IP) ?? throw new Xunit.Sdk.XunitException($"0x{original.IP:x} was not mapped");
            var now = DecodeAt(bytes, moved.NewAddress, at);
            if (original.IsIPRelativeMemoryOperand)
                Assert.Equal(original.IPRelativeMemoryAddress, now.IPRelativeMemoryAddress);
            else if (original.FlowControl is FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch or FlowControl.Call or FlowControl.XbeginXabortXend)
                Assert.Equal(original.NearBranchTarget, BranchTarget(bytes, moved.NewAddress, now, original));
            else
                Assert.Equal(original.Code, now.Code);
        }
        if (c.ContinueAt is { } back)
        {
            var last = Decoded.All(bytes, moved.NewAddress).Last(i => i.Mnemonic == Mnemonic.Jmp);
            Assert.Equal(back, BranchTarget(bytes, moved.NewAddress, last, last));
        }
    }

    private static ulong BranchTarget(byte[] bytes, ulong baseAddress, Instruction now, Instruction original)
    {
        if (now.IsIPRelativeMemoryOperand)
            return BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan((int)(now.IPRelativeMemoryAddress - baseAddress)));
        if (original.IsJccShortOrNear && now.IsJccShort && now.ConditionCode != original.ConditionCode)
            return BranchTarget(bytes, baseAddress, DecodeAt(bytes, baseAddress, now.NextIP), original); // jncc over jmp [slot]
        return now.NearBranchTarget;
    }

    private static Instruction DecodeAt(byte[] bytes, ulong baseAddress, ulong address)
    {
        var offset = (int)(address - baseAddress);
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes, offset, bytes.Length - offset), address);
        decoder.Decode(out var instruction);
        return instruction;
    }

    private static ulong Address(string text) => ulong.Parse(text.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}
