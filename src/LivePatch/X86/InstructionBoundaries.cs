using Iced.Intel;
using LivePatch.X86.Internal;

namespace LivePatch.X86;

/// <summary>Finds whole-instruction boundaries in code, for detours that must displace whole instructions.</summary>
public static class InstructionBoundaries
{
    /// <summary>The bytes of <c>endbr64</c>, the CET landing pad that may open a function.</summary>
    public static ReadOnlySpan<byte> Endbr64 => [0xf3, 0x0f, 0x1e, 0xfa];

    /// <summary>True when <paramref name="code"/> starts with <c>endbr64</c>.</summary>
    public static bool StartsWithEndbr64(ReadOnlySpan<byte> code) => code.StartsWith(Endbr64);

    /// <summary>Where a detour may start in a function whose first bytes are <paramref name="code"/>: after <c>endbr64</c> when present, else 0.</summary>
    public static int PatchableEntryOffset(ReadOnlySpan<byte> code) => StartsWithEndbr64(code) ? Endbr64.Length : 0;

    /// <summary>
    /// Decodes the fewest whole instructions starting at <paramref name="address"/> (the address of
    /// <paramref name="code"/>[0]) that cover at least <paramref name="minimumLength"/> bytes.
    /// </summary>
    /// <exception cref="InvalidInstructionException">The bytes do not decode, or end before enough instructions are whole.</exception>
    public static CoveredInstructions Cover(ReadOnlySpan<byte> code, ulong address, int minimumLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(minimumLength);
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code.ToArray()), address);
        var instructions = new List<Instruction>();
        var length = 0;
        int? flowEnd = null;
        while (length < minimumLength)
        {
            if (length >= code.Length)
                throw new InvalidInstructionException(address + (ulong)length,
                    $"the code at 0x{address:x} ends after {length} bytes; {minimumLength} bytes of whole instructions are needed");
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
                throw new InvalidInstructionException(instruction.IP, decoder.LastError == DecoderError.NoMoreBytes
                    ? $"the instruction at 0x{instruction.IP:x} is cut off by the end of the code given (or invalid)"
                    : $"the bytes at 0x{instruction.IP:x} are not a valid x86-64 instruction");
            instructions.Add(instruction);
            length += instruction.Length;
            if (flowEnd is null && EndsFlow(instruction) && length < minimumLength)
                flowEnd = length;
        }
        return new CoveredInstructions(address, instructions, length, flowEnd);
    }

    /// <summary>True for instructions after which execution never falls through to the next byte.</summary>
    internal static bool EndsFlow(in Instruction instruction) => instruction.FlowControl switch
    {
        FlowControl.Return or FlowControl.UnconditionalBranch or FlowControl.IndirectBranch => true,
        FlowControl.Exception => true, // ud2, ud0, ud1
        FlowControl.Interrupt => instruction.Code == Code.Int3,
        _ => instruction.Code == Code.Hlt,
    };
}

/// <summary>The whole instructions that cover the first bytes of some code, as found by <see cref="InstructionBoundaries.Cover"/>.</summary>
public sealed class CoveredInstructions
{
    internal CoveredInstructions(ulong address, IReadOnlyList<Instruction> instructions, int length, int? flowEndOffset)
    {
        Address = address;
        Instructions = instructions;
        Length = length;
        FlowEndOffset = flowEndOffset;
    }

    /// <summary>The address of the first instruction.</summary>
    public ulong Address { get; }

    /// <summary>The decoded instructions, in order.</summary>
    public IReadOnlyList<Instruction> Instructions { get; }

    /// <summary>Their total length in bytes: at least the length asked for.</summary>
    public int Length { get; }

    /// <summary>
    /// Where execution stops falling through (after a <c>ret</c>, <c>jmp</c>, <c>ud2</c>, <c>int3</c> or <c>hlt</c>)
    /// before the asked length, as an offset from <see cref="Address"/>; null when it does not. A function
    /// whose code ends there is shorter than the asked length.
    /// </summary>
    public int? FlowEndOffset { get; }
}

/// <summary>Bytes that are not a whole, valid x86-64 instruction where one was needed.</summary>
public sealed class InvalidInstructionException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for the instruction at <paramref name="address"/>.</summary>
    public InvalidInstructionException(ulong address, string message) : base(message) => Address = address;

    /// <summary>The address of the offending bytes.</summary>
    public ulong Address { get; }
}
