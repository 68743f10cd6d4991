namespace LivePatch.X86;

/// <summary>
/// A set of x86-64 general-purpose registers, one bit per register in encoding order (rax = bit 0 … r15 = bit 15),
/// as the clobber masks of call sites and patchlets record them (<c>LP_CLOBBER_*</c> in sites.h).
/// </summary>
[Flags]
public enum GeneralRegisters : ushort
{
    /// <summary>No register.</summary>
    None = 0,
    /// <summary>rax (the return value).</summary>
    Rax = 1 << 0,
    /// <summary>rcx (fourth argument).</summary>
    Rcx = 1 << 1,
    /// <summary>rdx (third argument).</summary>
    Rdx = 1 << 2,
    /// <summary>rbx (callee-saved).</summary>
    Rbx = 1 << 3,
    /// <summary>rsp: never in a clobber mask.</summary>
    Rsp = 1 << 4,
    /// <summary>rbp (callee-saved).</summary>
    Rbp = 1 << 5,
    /// <summary>rsi (second argument).</summary>
    Rsi = 1 << 6,
    /// <summary>rdi (first argument).</summary>
    Rdi = 1 << 7,
    /// <summary>r8 (fifth argument).</summary>
    R8 = 1 << 8,
    /// <summary>r9 (sixth argument).</summary>
    R9 = 1 << 9,
    /// <summary>r10.</summary>
    R10 = 1 << 10,
    /// <summary>r11.</summary>
    R11 = 1 << 11,
    /// <summary>r12 (callee-saved).</summary>
    R12 = 1 << 12,
    /// <summary>r13 (callee-saved).</summary>
    R13 = 1 << 13,
    /// <summary>r14 (callee-saved).</summary>
    R14 = 1 << 14,
    /// <summary>r15 (callee-saved).</summary>
    R15 = 1 << 15,
    /// <summary>The registers a System V C function may change: rax, rcx, rdx, rsi, rdi, r8–r11 (<c>LP_CLOBBERS_CALLER_SAVED</c>).</summary>
    CallerSaved = Rax | Rcx | Rdx | Rsi | Rdi | R8 | R9 | R10 | R11,
}
