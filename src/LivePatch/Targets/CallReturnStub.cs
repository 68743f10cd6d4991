using Iced.Intel;
using LivePatch.X86.Internal;
using static Iced.Intel.AssemblerRegisters;

namespace LivePatch.Targets;

/// <summary>
/// The code a call made with <see cref="PtraceSession.CallFunction"/> returns into, in a page mapped for the call. It
/// first makes one harmless system call (<c>getpid</c>, with the function's result in <c>rdi</c>): the tracer, which
/// runs the call with <c>PTRACE_SYSCALL</c>, stops the thread at its entry and puts the thread's state back itself.
/// If the tracer died meanwhile (livepatch killed during a hook), nobody stops it and the code goes on to put the
/// thread back alone from the save area left on its stack: the vector state (<c>XRSTOR</c>, or <c>FXRSTOR</c>), the
/// integer registers and flags, the stack pointer, then a jump to where the thread was — one instruction earlier
/// when it was parked in a system call the kernel would restart, as the kernel does when no handler runs.
/// </summary>
/// <remarks>
/// Save area, at the address the function returns with in <c>rsp</c> (64-byte aligned): 17 quadwords <c>r15 r14 r13
/// r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi rflags rsp</c>, then at <see cref="VectorOffset"/> the XSAVE area
/// (standard format, as <c>PTRACE_GETREGSET NT_X86_XSTATE</c> gives it) or the 512-byte FXSAVE area. The address to
/// resume at lies in the page, at <see cref="Code.ResumeSlot"/>.
/// </remarks>
internal static class CallReturnStub
{
    /// <summary>Offset of the vector state in the save area (64-byte aligned, as XRSTOR wants).</summary>
    public const int VectorOffset = 192;

    /// <summary>The system call the stub makes first, where the tracer catches the return.</summary>
    public const long MarkerSystemCall = SystemCall.Getpid;

    // AMX tile state (XTILECFG, XTILEDATA) is left out of XRSTOR: a function never uses it, and restoring it could
    // fault where the kernel keeps it disarmed (XFD).
    private const int WithoutAmx = ~0x60000;

    /// <summary>The stub's bytes, where its marker system call ends, and where the resume address goes.</summary>
    internal sealed record Code(byte[] Bytes, int MarkerEnd, int ResumeSlot);

    /// <summary>The registers in the order the stub pops them (the save area's first 15 quadwords).</summary>
    public static ulong[] GeneralRegisters(in Native.UserRegisters r, ulong rax) =>
        [r.R15, r.R14, r.R13, r.R12, r.Rbp, r.Rbx, r.R11, r.R10, r.R9, r.R8, rax, r.Rcx, r.Rdx, r.Rsi, r.Rdi];

    /// <summary>Assembles the stub, restoring the vector state with XRSTOR when <paramref name="xsave"/> (else FXRSTOR).</summary>
    public static Code Build(bool xsave)
    {
        var a = new Assembler(64);
        var markerEnd = a.CreateLabel();
        var resume = a.CreateLabel();
        a.mov(rdi, rax);
        a.mov(eax, (int)MarkerSystemCall);
        a.syscall();
        a.Label(ref markerEnd);
        if (xsave)
        {
            a.xor(ecx, ecx);
            a.xgetbv();
            a.and(eax, WithoutAmx);
            a.lea(rcx, __[rsp + VectorOffset]);
            a.xrstor64(__[rcx]);
        }
        else
        {
            a.lea(rcx, __[rsp + VectorOffset]);
            a.fxrstor64(__[rcx]);
        }
        foreach (var register in new[] { r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi })
            a.pop(register);
        a.popfq();
        a.mov(rsp, __qword_ptr[rsp]);
        a.jmp(__qword_ptr[resume]);
        a.int3();
        a.Label(ref resume);
        a.dq(0UL);
        var writer = new ByteListCodeWriter();
        var result = a.Assemble(writer, 0, BlockEncoderOptions.ReturnNewInstructionOffsets);
        return new Code([.. writer.Bytes], (int)result.GetLabelRIP(markerEnd), (int)result.GetLabelRIP(resume));
    }
}
