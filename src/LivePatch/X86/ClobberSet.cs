using System.Numerics;
using Iced.Intel;

namespace LivePatch.X86;

/// <summary>
/// The System V call-clobbered registers some code may write: general registers (rax, rcx, rdx, rsi, rdi, r8–r11),
/// vector registers by number (xmm/ymm/zmm 0–31: a write of any width counts, as VEX and EVEX writes clear the upper
/// bits) and AVX-512 mask registers k0–k7. Flags are not counted: no caller keeps a value in them across a call.
/// </summary>
/// <param name="General">General registers.</param>
/// <param name="Vectors">Vector registers, bit n for xmm/ymm/zmm n.</param>
/// <param name="Masks">Mask registers, bit n for kn.</param>
public readonly record struct ClobberSet(GeneralRegisters General, uint Vectors, byte Masks)
{
    /// <summary>No register.</summary>
    public static ClobberSet None => default;

    /// <summary>Every call-clobbered register: what a call to unknown code may write.</summary>
    public static ClobberSet Everything => new(GeneralRegisters.CallerSaved, uint.MaxValue, byte.MaxValue);

    /// <summary>True when no register is in the set.</summary>
    public bool IsEmpty => General == GeneralRegisters.None && Vectors == 0 && Masks == 0;

    /// <summary>The registers in either set.</summary>
    public ClobberSet Union(ClobberSet other) => new(General | other.General, Vectors | other.Vectors, (byte)(Masks | other.Masks));

    /// <summary>The registers in both sets.</summary>
    public ClobberSet Intersect(ClobberSet other) => new(General & other.General, Vectors & other.Vectors, (byte)(Masks & other.Masks));

    /// <summary>The registers of this set that <paramref name="other"/> lacks.</summary>
    public ClobberSet Except(ClobberSet other) => new(General & ~other.General, Vectors & ~other.Vectors, (byte)(Masks & ~other.Masks));

    /// <summary>The call-clobbered registers <paramref name="instruction"/> writes (fully, partly or conditionally).</summary>
    public static ClobberSet WrittenBy(in Instruction instruction, InstructionInfoFactory factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        var set = None;
        foreach (var used in factory.GetInfo(instruction).GetUsedRegisters())
        {
            if (used.Access is not (OpAccess.Write or OpAccess.ReadWrite or OpAccess.CondWrite or OpAccess.ReadCondWrite))
                continue;
            set = set.Union(Of(used.Register));
        }
        return set;
    }

    /// <summary>The set holding <paramref name="register"/> if it is call-clobbered (any width: eax is rax), else empty.</summary>
    public static ClobberSet Of(Register register)
    {
        if (register.IsGPR())
        {
            var full = register.GetFullRegister();
            var bit = full - Register.RAX;
            var general = bit is >= 0 and < 16 ? (GeneralRegisters)(1 << bit) & GeneralRegisters.CallerSaved : GeneralRegisters.None;
            return new(general, 0, 0);
        }
        if (register.IsVectorRegister())
            return new(GeneralRegisters.None, 1u << register.GetNumber(), 0);
        if (register is >= Register.K0 and <= Register.K7)
            return new(GeneralRegisters.None, 0, (byte)(1 << (register - Register.K0)));
        return None;
    }

    /// <summary>The registers, named: <c>rcx, rdx, r8, xmm0-xmm7, k1</c>; <c>none</c> when empty.</summary>
    public override string ToString()
    {
        if (IsEmpty)
            return "none";
        var names = new List<string>();
        for (var bit = 0; bit < 16; bit++)
            if (((int)General & (1 << bit)) != 0)
                names.Add((Register.RAX + bit).ToString().ToLowerInvariant());
        for (var first = 0; first < 32; first++)
        {
            if ((Vectors & (1u << first)) == 0)
                continue;
            var last = first;
            while (last < 31 && (Vectors & (1u << (last + 1))) != 0)
                last++;
            names.Add(first == last ? $"xmm{first}" : $"xmm{first}-xmm{last}");
            first = last;
        }
        for (var bit = 0; bit < 8; bit++)
            if ((Masks & (1 << bit)) != 0)
                names.Add($"k{bit}");
        return string.Join(", ", names);
    }

    /// <summary>How many registers the set holds.</summary>
    public int Count => BitOperations.PopCount((uint)General) + BitOperations.PopCount(Vectors) + BitOperations.PopCount(Masks);
}

/// <summary>What one function's code does to the registers and where it leaves for other code.</summary>
/// <param name="Written">The call-clobbered registers its own instructions write.</param>
/// <param name="Calls">Targets of its direct calls.</param>
/// <param name="Exits">Targets of its direct jumps that leave it (tail calls).</param>
/// <param name="UnknownCall">Where it calls code it cannot name (an indirect or far call), or null.</param>
/// <param name="IndirectJump">Where it jumps through a register or memory (a jump table, or a tail call through a pointer), or null.</param>
/// <param name="Undecodable">Where its bytes stop being instructions (the scan ends there), or null.</param>
public sealed record FunctionCode(ClobberSet Written, IReadOnlyList<ulong> Calls, IReadOnlyList<ulong> Exits, string? UnknownCall, string? IndirectJump, string? Undecodable)
{
    /// <summary>Why it may run code this scan does not see (the first of the three reasons), or null.</summary>
    public string? Opaque => UnknownCall ?? IndirectJump ?? Undecodable;

    /// <summary>
    /// Decodes the function whose code is <paramref name="code"/> at <paramref name="address"/>. A jump within the
    /// code is the function's own; a direct jump out of it is a tail call; an indirect call, an indirect jump (a
    /// tail call through a pointer, or a jump table) and invalid bytes are reported apart, for the caller to weigh.
    /// </summary>
    public static FunctionCode Scan(ReadOnlySpan<byte> code, ulong address)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code.ToArray()), address);
        var factory = new InstructionInfoFactory();
        var end = address + (ulong)code.Length;
        var written = ClobberSet.None;
        var calls = new List<ulong>();
        var exits = new List<ulong>();
        string? unknownCall = null, indirectJump = null, undecodable = null;
        while (decoder.IP < end)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
            {
                undecodable = $"bytes that are not an instruction at 0x{instruction.IP:x}";
                break;
            }
            written = written.Union(ClobberSet.WrittenBy(instruction, factory));
            switch (instruction.FlowControl)
            {
                case FlowControl.Call when instruction.Op0Kind is OpKind.NearBranch16 or OpKind.NearBranch32 or OpKind.NearBranch64:
                    calls.Add(instruction.NearBranchTarget);
                    break;
                case FlowControl.Call when instruction.Mnemonic is Mnemonic.Syscall:
                    break; // what the kernel writes (rcx, r11, rax) is in the instruction's own info
                case FlowControl.Call:
                    unknownCall ??= $"a far call at 0x{instruction.IP:x}";
                    break;
                case FlowControl.IndirectCall:
                    unknownCall ??= $"an indirect call at 0x{instruction.IP:x}";
                    break;
                case FlowControl.IndirectBranch:
                    indirectJump ??= $"an indirect jump at 0x{instruction.IP:x}";
                    break;
                case FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch when instruction.Op0Kind is OpKind.NearBranch16 or OpKind.NearBranch32 or OpKind.NearBranch64:
                    var target = instruction.NearBranchTarget;
                    if (target < address || target >= end)
                        exits.Add(target);
                    break;
            }
        }
        return new FunctionCode(written, calls, exits, unknownCall, indirectJump, undecodable);
    }

    /// <summary>
    /// True when the code at <paramref name="address"/> is a stub that jumps on through a pointer in memory
    /// (<c>[endbr64;] [bnd] jmp *slot(%rip)</c>): a PLT entry, or a function that is only a tail call through a pointer.
    /// </summary>
    public static bool IsJumpThroughSlot(ReadOnlySpan<byte> code, ulong address)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code.ToArray()), address);
        decoder.Decode(out var instruction);
        if (instruction.Mnemonic == Mnemonic.Endbr64)
            decoder.Decode(out instruction);
        return instruction.Mnemonic == Mnemonic.Jmp && instruction.FlowControl == FlowControl.IndirectBranch && instruction.IsIPRelativeMemoryOperand;
    }
}
