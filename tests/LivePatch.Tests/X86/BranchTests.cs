using FsCheck;
using FsCheck.Fluent;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

public class BranchTests
{
    // jmp/call placed at an address, aimed at a target, and the bytes an assembler writes for them.
    [Theory]
    [InlineData(0x401000UL, 0x401005UL, "e9 00 00 00 00", "e8 00 00 00 00")]
    [InlineData(0x401000UL, 0x401000UL, "e9 fb ff ff ff", "e8 fb ff ff ff")]
    [InlineData(0x401000UL, 0x402000UL, "e9 fb 0f 00 00", "e8 fb 0f 00 00")]
    [InlineData(0x7f0000001000UL, 0x7f0000000000UL, "e9 fb ef ff ff", "e8 fb ef ff ff")]
    [InlineData(0x400000UL, 0x80400004UL, "e9 ff ff ff 7f", "e8 ff ff ff 7f")]
    [InlineData(0x80400000UL, 0x400005UL, "e9 00 00 00 80", "e8 00 00 00 80")]
    public void Rel32_branches_encode_as_an_assembler_would(ulong address, ulong target, string jump, string call)
    {
        var buffer = new byte[Branch.Rel32Length];

        Branch.WriteJump(buffer, address, target);
        Assert.Equal(Decoded.Hex(jump), buffer);

        Branch.WriteCall(buffer, address, target);
        Assert.Equal(Decoded.Hex(call), buffer);
    }

    [Theory]
    [InlineData(0x400000UL, 0x80400005UL)]  // one byte past +2 GiB
    [InlineData(0x80400001UL, 0x400005UL)]  // one byte past -2 GiB
    [InlineData(0x401000UL, 0x7fff_f7a0_0000UL)]
    public void A_target_beyond_2_GiB_is_refused_and_named(ulong address, ulong target)
    {
        var buffer = new byte[Branch.Rel32Length];

        var error = Assert.Throws<BranchOutOfRangeException>(() => Branch.WriteJump(buffer, address, target));

        Assert.Equal(address, error.Address);
        Assert.Equal(target, error.Target);
        Assert.Contains($"0x{target:x}", error.Message, StringComparison.Ordinal);
        Assert.Equal(new byte[Branch.Rel32Length], buffer);
        Assert.False(Branch.CanReach(address, target));
    }

    [Fact]
    public void Every_reachable_target_decodes_back_to_itself() =>
        Prop.ForAll(ArbMap.Default.ArbFor<ulong>(), Gen.Choose(int.MinValue, int.MaxValue).ToArbitrary(), ArbMap.Default.ArbFor<bool>(),
            (address, displacement, isCall) =>
            {
                var target = address + 5 + (ulong)(long)displacement;
                var buffer = new byte[Branch.Rel32Length];
                if (isCall)
                    Branch.WriteCall(buffer, address, target);
                else
                    Branch.WriteJump(buffer, address, target);
                var instruction = Assert.Single(Decoded.All(buffer, address));
                return Branch.CanReach(address, target)
                    && instruction.NearBranchTarget == target
                    && instruction.IsCallNear == isCall;
            }).QuickCheckThrowOnFailure();

    [Fact]
    public void A_destination_shorter_than_5_bytes_is_refused() =>
        Assert.Throws<ArgumentException>(() => Branch.WriteJump(new byte[4], 0x1000, 0x2000));

    [Fact]
    public void A_jump_written_reads_back_to_its_target_and_nothing_else_reads_as_one()
    {
        var buffer = new byte[Branch.Rel32Length];
        Branch.WriteJump(buffer, 0x7f0000001000, 0x7f0000100000);

        Assert.True(Branch.TryReadJump(buffer, 0x7f0000001000, out var target));
        Assert.Equal(0x7f0000100000UL, target);
        Branch.WriteCall(buffer, 0x1000, 0x2000);
        Assert.False(Branch.TryReadJump(buffer, 0x1000, out _));
        Assert.False(Branch.TryReadJump([0x0f, 0x1f, 0x44, 0x00, 0x00], 0x1000, out _)); // the 5-byte NOP
        Assert.False(Branch.TryReadJump([0xe9, 0x00, 0x00, 0x00], 0x1000, out _)); // cut short
    }
}
