using Iced.Intel;
using LivePatch.X86.Internal;
using static Iced.Intel.AssemblerRegisters;

namespace LivePatch.X86;

/// <summary>
/// The kernel's <c>PV_CALLEE_SAVE</c> thunk for a replaced function: called instead of the new function, it keeps the
/// registers the callers rely on (the call-clobbered ones the old function never wrote) around a call of the new
/// one. The new function finds its stack-passed arguments at <c>rsp+8</c> as if called directly: the thunk copies
/// the first 128 bytes above its return address (16 stack arguments) below its frame, keeps the 16-byte alignment
/// and writes only below its caller's stack pointer (the red zone belongs to the function it was called from only
/// while that one calls nothing). Flags are not kept.
/// </summary>
public static class CalleeSaveThunk
{
    /// <summary>The most bytes a thunk takes.</summary>
    public const int MaxSize = 1024;

    /// <summary>Bytes of stack arguments copied for the new function: 16 of them.</summary>
    public const int StackArgumentBytes = 128;

    private static readonly AssemblerRegister64[] General = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];

    /// <summary>
    /// Assembles, for <paramref name="address"/>, a thunk that keeps <paramref name="keep"/> around a call of
    /// <paramref name="function"/> and returns what it returned. Vector registers are kept
    /// <paramref name="vectorBytes"/> wide (16: xmm, 32: ymm with AVX, 64: zmm with AVX-512); mask registers
    /// (AVX-512 only) <paramref name="maskBytes"/> wide (8 with AVX512BW's 64-bit masks, else 2).
    /// </summary>
    /// <exception cref="ArgumentException">The set holds registers the asked widths have not: masks or xmm16-31 without AVX-512.</exception>
    /// <exception cref="RelocationException">Iced cannot assemble it there (the function is out of rel32 reach).</exception>
    public static byte[] Assemble(ulong address, ulong function, ClobberSet keep, int vectorBytes, int maskBytes = 8)
    {
        if (keep.Masks != 0 && vectorBytes < 64)
            throw new ArgumentException($"mask registers ({keep}) exist only with AVX-512", nameof(keep));
        if (maskBytes is not (2 or 8))
            throw new ArgumentOutOfRangeException(nameof(maskBytes), maskBytes, "mask registers are kept 2 (kmovw) or 8 (kmovq) bytes wide");
        if (vectorBytes is not (16 or 32 or 64))
            throw new ArgumentOutOfRangeException(nameof(vectorBytes), vectorBytes, "vector registers are 16, 32 or 64 bytes wide");
        if (vectorBytes < 64 && (keep.Vectors & 0xffff0000u) != 0)
            throw new ArgumentException($"xmm16-xmm31 exist only with AVX-512 ({keep})", nameof(keep));

        var generals = Enumerable.Range(0, 16).Where(i => ((int)keep.General & (1 << i)) != 0).ToList();
        var vectors = Enumerable.Range(0, 32).Where(i => (keep.Vectors & (1u << i)) != 0).ToList();
        var masks = Enumerable.Range(0, 8).Where(i => (keep.Masks & (1 << i)) != 0).ToList();
        // Frame, from rsp up: the stack arguments' copy, rdi/rsi/rcx while copying, the kept registers. At entry
        // rsp is 8 past a 16-byte boundary (the call pushed its return address): a frame of 16k + 8 bytes aligns it.
        const int scratch = StackArgumentBytes;
        const int kept = scratch + 24;
        var vectorArea = (kept + 8 * generals.Count + vectorBytes - 1) / vectorBytes * vectorBytes;
        var maskArea = vectorArea + vectors.Count * vectorBytes;
        var frame = (maskArea + masks.Count * 8 + 15) / 16 * 16 + 8;

        var a = new Assembler(64);
        a.sub(rsp, frame);
        a.mov(__qword_ptr[rsp + scratch], rdi);
        a.mov(__qword_ptr[rsp + scratch + 8], rsi);
        a.mov(__qword_ptr[rsp + scratch + 16], rcx);
        a.lea(rsi, __qword_ptr[rsp + frame + 8]);
        a.mov(rdi, rsp);
        a.mov(ecx, StackArgumentBytes / 8);
        a.rep.movsq();
        a.mov(rdi, __qword_ptr[rsp + scratch]);
        a.mov(rsi, __qword_ptr[rsp + scratch + 8]);
        a.mov(rcx, __qword_ptr[rsp + scratch + 16]);
        for (var i = 0; i < generals.Count; i++)
            a.mov(__qword_ptr[rsp + kept + 8 * i], General[generals[i]]);
        for (var i = 0; i < vectors.Count; i++)
            SaveVector(a, vectors[i], vectorArea + i * vectorBytes, vectorBytes, save: true);
        for (var i = 0; i < masks.Count; i++)
            SaveMask(a, masks[i], maskArea + i * 8, maskBytes, save: true);
        a.call(function);
        for (var i = 0; i < masks.Count; i++)
            SaveMask(a, masks[i], maskArea + i * 8, maskBytes, save: false);
        for (var i = 0; i < vectors.Count; i++)
            SaveVector(a, vectors[i], vectorArea + i * vectorBytes, vectorBytes, save: false);
        for (var i = 0; i < generals.Count; i++)
            a.mov(General[generals[i]], __qword_ptr[rsp + kept + 8 * i]);
        a.add(rsp, frame);
        a.ret();

        var writer = new ByteListCodeWriter();
        if (!a.TryAssemble(writer, address, out var error, out _))
            throw new RelocationException($"cannot assemble the callee-save thunk at 0x{address:x} calling 0x{function:x}: {error}");
        if (writer.Bytes.Count > MaxSize)
            throw new RelocationException($"the callee-save thunk keeping {keep} takes {writer.Bytes.Count} bytes, more than {MaxSize}");
        return [.. writer.Bytes];
    }

    private static void SaveMask(Assembler a, int number, int offset, int width, bool save)
    {
        var k = new AssemblerRegisterK(Register.K0 + number);
        if (width == 8)
        {
            if (save)
                a.kmovq(__qword_ptr[rsp + offset], k);
            else
                a.kmovq(k, __qword_ptr[rsp + offset]);
        }
        else if (save)
            a.kmovw(__word_ptr[rsp + offset], k);
        else
            a.kmovw(k, __word_ptr[rsp + offset]);
    }

    private static void SaveVector(Assembler a, int number, int offset, int width, bool save)
    {
        switch (width)
        {
            case 16:
                var xmm = new AssemblerRegisterXMM(Register.XMM0 + number);
                if (save)
                    a.movdqu(__xmmword_ptr[rsp + offset], xmm);
                else
                    a.movdqu(xmm, __xmmword_ptr[rsp + offset]);
                break;
            case 32:
                var ymm = new AssemblerRegisterYMM(Register.YMM0 + number);
                if (save)
                    a.vmovdqu(__ymmword_ptr[rsp + offset], ymm);
                else
                    a.vmovdqu(ymm, __ymmword_ptr[rsp + offset]);
                break;
            default:
                var zmm = new AssemblerRegisterZMM(Register.ZMM0 + number);
                if (save)
                    a.vmovdqu64(__zmmword_ptr[rsp + offset], zmm);
                else
                    a.vmovdqu64(zmm, __zmmword_ptr[rsp + offset]);
                break;
        }
    }

    /// <summary>How wide this CPU's vector registers are, as a thunk keeps them: 64 with AVX-512, 32 with AVX, else 16.</summary>
    public static int VectorBytes(CpuFeatures cpu)
    {
        ArgumentNullException.ThrowIfNull(cpu);
        return cpu.Has(CpuFeature.Avx512F) ? 64 : cpu.Has(CpuFeature.Avx) ? 32 : 16;
    }
}
