using Iced.Intel;
using LivePatch.X86;
using static Iced.Intel.AssemblerRegisters;

namespace LivePatch.Tests.X86;

public class PatchBufferTests
{
    [Fact]
    public void A_site_at_the_patch_limit_is_accepted_and_one_byte_more_is_refused()
    {
        Assert.Equal(PatchBuffer.MaxPatchLength, new PatchBuffer(0x1000, 254).Capacity);

        var error = Assert.Throws<PatchTooLongException>(() => new PatchBuffer(0x1000, 255));

        Assert.Equal(255, error.RequiredLength);
        Assert.Equal(254, error.Capacity);
        Assert.Contains("0x1000", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_replacement_longer_than_the_site_is_refused_without_writing_any_of_it()
    {
        var buffer = new PatchBuffer(0x401000, 6);
        buffer.Write([0x31, 0xc0]);

        var error = Assert.Throws<PatchTooLongException>(() => buffer.Write([0x90, 0x90, 0x90, 0x90, 0x90]));

        Assert.Equal(7, error.RequiredLength);
        Assert.Equal(6, error.Capacity);
        Assert.Equal([0x31, 0xc0], buffer.Written.ToArray());
        Assert.Throws<PatchTooLongException>(() => buffer.WriteJump(0x402000));
        Assert.Equal(2, buffer.Length);
    }

    [Fact]
    public void Fill_pads_after_the_replacement_and_completes_the_buffer()
    {
        var buffer = new PatchBuffer(0x401000, 16);
        buffer.Write([0x31, 0xc0]);
        Assert.False(buffer.IsComplete);
        Assert.Throws<InvalidOperationException>(() => buffer.Bytes.ToArray());

        buffer.Fill();

        Assert.True(buffer.IsComplete);
        var instructions = Decoded.All(buffer.Bytes.ToArray(), buffer.Address);
        Assert.Equal(Mnemonic.Xor, instructions[0].Mnemonic);
        Assert.Equal(Nops.Get(11).ToArray(), buffer.Bytes.Slice(2, 11).ToArray());
        Assert.Equal(Nops.Get(3).ToArray(), buffer.Bytes.Slice(13, 3).ToArray());
    }

    [Fact]
    public void Branches_are_encoded_for_the_address_they_will_run_at()
    {
        var buffer = new PatchBuffer(0x7f12_3456_0000, 16);
        buffer.Write([0x90]);
        buffer.WriteCall(0x7f12_3400_0000);
        buffer.WriteJump(0x7f12_3456_0000);
        buffer.Fill();

        var instructions = Decoded.All(buffer.Bytes.ToArray(), buffer.Address);

        Assert.Equal(0x7f12_3456_0001UL, instructions[1].IP);
        Assert.True(instructions[1].IsCallNear);
        Assert.Equal(0x7f12_3400_0000UL, instructions[1].NearBranchTarget);
        Assert.True(instructions[2].IsJmpNear);
        Assert.Equal(0x7f12_3456_0000UL, instructions[2].NearBranchTarget);
    }

    [Fact]
    public void Iced_assembler_code_is_assembled_at_the_next_address()
    {
        var buffer = new PatchBuffer(0x500000, 32);
        buffer.Write([0x90, 0x90]);
        var assembler = new Assembler(64);
        var skip = assembler.CreateLabel();
        var data = assembler.CreateLabel();
        assembler.test(edi, edi);
        assembler.je(skip);
        assembler.lea(rax, __[data]);
        assembler.Label(ref skip);
        assembler.ret();
        assembler.Label(ref data);
        assembler.db(0x2a);

        buffer.Write(assembler);
        buffer.Fill();

        var instructions = Decoded.All(buffer.Bytes.ToArray(), buffer.Address);
        Assert.Equal(Mnemonic.Test, instructions[2].Mnemonic);
        Assert.Equal(instructions[5].IP, instructions[3].NearBranchTarget);
        Assert.Equal(Mnemonic.Ret, instructions[5].Mnemonic);
        Assert.Equal(instructions[5].NextIP, instructions[4].IPRelativeMemoryAddress);
    }

    [Fact]
    public void Decoded_instructions_keep_their_absolute_targets_when_written_elsewhere()
    {
        var original = Decoded.All(Decoded.Hex("48 8b 05 10 00 00 00 e8 00 01 00 00"), 0x400000);
        var buffer = new PatchBuffer(0x400100, 12);

        buffer.WriteInstructions(original);

        var moved = Decoded.All(buffer.Written.ToArray(), 0x400100);
        Assert.Equal(0x400017UL, moved[0].IPRelativeMemoryAddress);
        Assert.Equal(0x40010cUL, moved[1].NearBranchTarget);
    }
}
