using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

public class NopsTests
{
    [Theory]
    [MemberData(nameof(SingleLengths))]
    public void Each_single_form_is_one_nop_of_exactly_that_length(int length)
    {
        var bytes = Nops.Get(length).ToArray();

        var instructions = Decoded.All(bytes, 0x1000);

        var nop = Assert.Single(instructions);
        Assert.Equal(Mnemonic.Nop, nop.Mnemonic);
        Assert.Equal(length, nop.Length);
    }

    [Fact]
    public void The_table_is_what_GNU_as_emits_for_each_length()
    {
        for (var length = 1; length <= Nops.MaxLength; length++)
        {
            var fromAs = ExternalTool.AssembleText($".text\n.nops {length}, {length}\n");
            Assert.Equal(Decoded.ToHex(fromAs), Decoded.ToHex(Nops.Get(length)));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(12)]
    [InlineData(-1)]
    public void A_single_nop_outside_1_to_11_bytes_is_refused(int length) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Nops.Get(length).ToArray());

    [Fact]
    public void Fill_covers_every_length_up_to_the_patch_limit_with_the_fewest_nops()
    {
        for (var length = 0; length <= PatchBuffer.MaxPatchLength; length++)
        {
            var buffer = new byte[length];
            Array.Fill(buffer, (byte)0xcc);

            var count = Nops.Fill(buffer);

            var instructions = Decoded.All(buffer, 0x7f00_0000_0000);
            Assert.All(instructions, i => Assert.Equal(Mnemonic.Nop, i.Mnemonic));
            Assert.Equal(length, instructions.Sum(i => i.Length));
            Assert.Equal(instructions.Count, count);
            // No NOP is longer than 11 bytes, so ceil(length / 11) instructions is the least possible.
            Assert.Equal((length + 10) / 11, count);
        }
    }

    [Fact]
    public void Fill_writes_only_inside_the_span_it_is_given() =>
        Prop.ForAll(Gen.Choose(0, 600).ToArbitrary(), Gen.Choose(0, 40).ToArbitrary(), (length, margin) =>
        {
            var whole = new byte[length + 2 * margin];
            Array.Fill(whole, (byte)0xcc);
            Nops.Fill(whole.AsSpan(margin, length));
            return whole.AsSpan(0, margin).IndexOfAnyExcept((byte)0xcc) < 0
                && whole.AsSpan(margin + length).IndexOfAnyExcept((byte)0xcc) < 0
                && Nops.CountFor(length) == (length + 10) / 11;
        }).QuickCheckThrowOnFailure();

    public static TheoryData<int> SingleLengths() => [.. Enumerable.Range(1, Nops.MaxLength)];
}
