using Iced.Intel;
using LivePatch.X86;

namespace LivePatch.Tests.X86;

/// <summary>The callee-save thunk's shape, decoded: aligned frame, stack arguments copied, every kept register saved before the call and restored after it.</summary>
public class CalleeSaveThunkTests
{
    private const ulong At = 0x7f0000001000;
    private const ulong Function = 0x7f0000100000;

    public static TheoryData<int> Widths => [16, 32, 64];

    [Theory]
    [MemberData(nameof(Widths))]
    public void The_widest_thunk_fits_and_keeps_every_register_but_rax_around_one_call(int width)
    {
        var all = ClobberSet.Everything.Except(ClobberSet.Of(Register.RAX)) with { Masks = 0, Vectors = width == 64 ? uint.MaxValue : 0xffff };

        var code = CalleeSaveThunk.Assemble(At, Function, all, width);
        var instructions = Decoded.All(code, At);

        Assert.True(code.Length <= CalleeSaveThunk.MaxSize, $"{code.Length} bytes");
        var frame = instructions[0];
        Assert.Equal((Mnemonic.Sub, Register.RSP), (frame.Mnemonic, frame.Op0Register));
        Assert.Equal(8, (int)(frame.Immediate32 % 16)); // rsp was 8 past a 16-byte boundary: aligned at the call
        Assert.Contains(instructions, i => i.Mnemonic == Mnemonic.Movsq && i.HasRepPrefix);
        var call = Assert.Single(instructions, i => i.Mnemonic == Mnemonic.Call);
        Assert.Equal(Function, call.NearBranchTarget);
        var callAt = instructions.IndexOf(call);
        var saved = instructions.Take(callAt).Where(i => i.Op0Kind == OpKind.Memory && i.Op1Kind == OpKind.Register).Select(i => i.Op1Register.GetFullRegister()).ToHashSet();
        var restored = instructions.Skip(callAt).Where(i => i.Op0Kind == OpKind.Register && i.Op1Kind == OpKind.Memory).Select(i => i.Op0Register.GetFullRegister()).ToHashSet();
        foreach (var register in new[] { Register.RCX, Register.RDX, Register.RSI, Register.RDI, Register.R8, Register.R9, Register.R10, Register.R11 })
        {
            Assert.Contains(register, saved);
            Assert.Contains(register, restored);
        }
        Assert.DoesNotContain(Register.RAX, restored); // the return value
        Assert.Equal(width == 64 ? 32 : 16, restored.Count(r => r.IsVectorRegister()));
        Assert.Equal((Mnemonic.Add, Register.RSP, frame.Immediate32), (instructions[^2].Mnemonic, instructions[^2].Op0Register, instructions[^2].Immediate32));
        Assert.Equal(Mnemonic.Ret, instructions[^1].Mnemonic);
    }

    [Fact]
    public void Mask_registers_and_upper_vectors_without_avx512_are_refused()
    {
        Assert.Throws<ArgumentException>(() => CalleeSaveThunk.Assemble(At, Function, ClobberSet.Of(Register.K1), 32));
        Assert.Throws<ArgumentException>(() => CalleeSaveThunk.Assemble(At, Function, ClobberSet.Of(Register.XMM17), 32));
    }

    [Theory]
    [InlineData(8, Mnemonic.Kmovq)]
    [InlineData(2, Mnemonic.Kmovw)]
    public void With_avx512_every_mask_register_is_kept_around_the_call(int maskBytes, Mnemonic move)
    {
        var all = ClobberSet.Everything.Except(ClobberSet.Of(Register.RAX));

        var code = CalleeSaveThunk.Assemble(At, Function, all, 64, maskBytes);
        var instructions = Decoded.All(code, At);

        Assert.True(code.Length <= CalleeSaveThunk.MaxSize, $"{code.Length} bytes");
        var callAt = instructions.FindIndex(i => i.Mnemonic == Mnemonic.Call);
        var saved = instructions.Take(callAt).Where(i => i.Mnemonic == move && i.Op0Kind == OpKind.Memory).Select(i => i.Op1Register).ToHashSet();
        var restored = instructions.Skip(callAt).Where(i => i.Mnemonic == move && i.Op1Kind == OpKind.Memory).Select(i => i.Op0Register).ToHashSet();
        var masks = Enumerable.Range(0, 8).Select(n => Register.K0 + n).ToHashSet();
        Assert.Equal(masks, saved);
        Assert.Equal(masks, restored);
        Assert.Equal(8, (int)(instructions[0].Immediate32 % 16));
    }

    [Fact]
    public void A_clobber_set_names_its_registers()
    {
        var set = ClobberSet.Of(Register.ECX).Union(ClobberSet.Of(Register.R8D)).Union(ClobberSet.Of(Register.XMM0)).Union(ClobberSet.Of(Register.YMM1)).Union(ClobberSet.Of(Register.ZMM3));

        Assert.Equal("rcx, r8, xmm0-xmm1, xmm3", set.ToString());
        Assert.Equal(ClobberSet.None, ClobberSet.Of(Register.RBX)); // callee-saved: never clobbered by a call
        Assert.Equal(5, set.Count);
    }

    // ipara.c's scale: mov bias(%rip),%edx; lea (%rdi,%rdi,2),%eax; add %edx,%eax; ret
    [Theory]
    [InlineData("8b15ea2d0000 8d047f 01d0 c3", "rax, rdx", 0, 0, null)]
    // getpid: mov $39,%eax; syscall; ret (the kernel writes rcx and r11)
    [InlineData("b827000000 0f05 c3", "rax, rcx, r11", 0, 0, null)]
    // a call, then a tail call out: call +0x100; jmp +0x200
    [InlineData("e800010000 e900020000", "none", 1, 1, null)]
    // pxor %xmm3,%xmm3; vzeroupper is not counted as a write of every ymm by Iced, vmovdqa ymm5 is
    [InlineData("660fefdb c5fd6fe9 c3", "xmm3, xmm5", 0, 0, null)]
    // call *%rax: unknown code
    [InlineData("ffd0 c3", "none", 0, 0, "an indirect call at 0x401000")]
    public void A_function_s_writes_calls_and_exits_are_read_from_its_code(string hex, string written, int calls, int exits, string? opaque)
    {
        var code = FunctionCode.Scan(Decoded.Hex(hex), 0x401000);

        Assert.Equal(written, code.Written.ToString());
        Assert.Equal((calls, exits, opaque), (code.Calls.Count, code.Exits.Count, code.Opaque));
    }


    // What the analysis weighs differently in each direction is told apart: an unknown call, an indirect jump
    // (gcc's jump table: lea table(%rip),%rcx; movslq (%rcx,%rdi,4),%rdx; add %rcx,%rdx; notrack jmp *%rdx), bad bytes.
    [Theory]
    [InlineData("488d0d00010000 486314b9 4801ca 3effe2 b801000000 c3", "rax, rcx, rdx", null, "an indirect jump at 0x40100e", null)]
    [InlineData("ffe0", "none", null, "an indirect jump at 0x401000", null)]
    [InlineData("ffd0 ffe0", "none", "an indirect call at 0x401000", "an indirect jump at 0x401002", null)]
    [InlineData("31c0 06", "rax", null, null, "bytes that are not an instruction at 0x401002")]
    public void Unknown_calls_indirect_jumps_and_bad_bytes_are_told_apart(string hex, string written, string? unknownCall, string? indirectJump, string? undecodable)
    {
        var code = FunctionCode.Scan(Decoded.Hex(hex), 0x401000);

        Assert.Equal((written, unknownCall, indirectJump, undecodable), (code.Written.ToString(), code.UnknownCall, code.IndirectJump, code.Undecodable));
    }

    [Theory]
    [InlineData("ff25e22f0000", true)] // .plt: jmp *slot(%rip)
    [InlineData("f30f1efa f2ff25e22f0000", true)] // .plt.sec: endbr64; bnd jmp *slot(%rip)
    [InlineData("ffe0", false)] // jmp *%rax: no slot
    [InlineData("ff24c5e0204000", false)] // jmp *table(,%rax,8): a jump table
    [InlineData("f30f1efa 31c0 c3", false)]
    [InlineData("", false)]
    public void A_stub_jumping_through_a_slot_is_recognised(string hex, bool stub)
    {
        Assert.Equal(stub, FunctionCode.IsJumpThroughSlot(Decoded.Hex(hex), 0x401000));
    }
}
