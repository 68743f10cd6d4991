using System.Runtime.CompilerServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>
/// A stopped thread's general registers and RIP in DWARF's x86-64 numbering (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi,
/// 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 rip), as the stop read them: what unwinding its stack starts from.
/// </summary>
internal struct ThreadRegisters
{
    /// <summary>The registers, by DWARF number.</summary>
    public RegisterValues Values;

    /// <summary>False for a thread built from RIP and RSP alone (its stack can only be scanned).</summary>
    public bool IsSet;

    /// <summary>The registers of <paramref name="registers"/>, as PTRACE_GETREGS returned them.</summary>
    public static ThreadRegisters From(in UserRegisters registers)
    {
        var result = new ThreadRegisters { IsSet = true };
        result.Values[0] = registers.Rax;
        result.Values[1] = registers.Rdx;
        result.Values[2] = registers.Rcx;
        result.Values[3] = registers.Rbx;
        result.Values[4] = registers.Rsi;
        result.Values[5] = registers.Rdi;
        result.Values[6] = registers.Rbp;
        result.Values[7] = registers.Rsp;
        result.Values[8] = registers.R8;
        result.Values[9] = registers.R9;
        result.Values[10] = registers.R10;
        result.Values[11] = registers.R11;
        result.Values[12] = registers.R12;
        result.Values[13] = registers.R13;
        result.Values[14] = registers.R14;
        result.Values[15] = registers.R15;
        result.Values[16] = registers.Rip;
        return result;
    }
}

/// <summary>Seventeen register values (DWARF 0-16).</summary>
[InlineArray(17)]
internal struct RegisterValues
{
    private ulong _first;
}
