using Iced.Intel;
using LivePatch.X86.Internal;

namespace LivePatch.X86;

/// <summary>
/// Moves whole instructions from one address to another so they behave the same there: RIP-relative
/// operands and rel8/rel32 branches are re-aimed at the addresses they named (Iced's <c>BlockEncoder</c>).
/// This is how a trampoline holds a function's displaced prologue.
/// </summary>
public static class Relocator
{
    /// <summary>
    /// Relocates <paramref name="code"/>, which starts at <paramref name="oldAddress"/> and holds only whole
    /// instructions, to run at <paramref name="newAddress"/>. With <paramref name="continueAt"/>, a jump there
    /// is appended (a trampoline's way back to the rest of the original function).
    /// </summary>
    /// <exception cref="InvalidInstructionException">The bytes do not decode into whole instructions.</exception>
    /// <exception cref="RelocationException">An instruction cannot be moved safely; the message names it.</exception>
    public static RelocatedCode Relocate(ReadOnlySpan<byte> code, ulong oldAddress, ulong newAddress, ulong? continueAt = null)
    {
        if (code.IsEmpty)
            throw new ArgumentException("there is no code to relocate", nameof(code));
        var instructions = DecodeAll(code, oldAddress);
        var oldEnd = oldAddress + (ulong)code.Length;
        foreach (var instruction in instructions)
            RefuseBranchIntoMovedRange(instruction, oldAddress, oldEnd);

        var block = new List<Instruction>(instructions);
        if (continueAt is { } back)
            block.Add(Instruction.CreateBranch(Code.Jmp_rel32_64, back));
        var bytes = Encode(block, newAddress, instructions, oldAddress, out var newOffsets);

        var offsets = new (int Old, int New)[instructions.Count];
        var rewritten = false;
        for (var i = 0; i < instructions.Count; i++)
        {
            var newOffset = newOffsets[i];
            if (newOffset == uint.MaxValue)
            {
                // Iced replaced it by a longer sequence (a far jcc, call or jmp through a slot).
                RefuseRewrite(instructions[i]);
                newOffset = CodeLength(instructions.GetRange(0, i), newAddress);
                rewritten = true;
            }
            offsets[i] = ((int)(instructions[i].IP - oldAddress), (int)newOffset);
        }
        // Rewritten branches keep their 64-bit targets in slots after the code: falling off the end would run them.
        if (rewritten && continueAt is null && !InstructionBoundaries.EndsFlow(instructions[^1])
            && CodeLength(instructions, newAddress) != bytes.Length)
            throw new RelocationException(
                $"{InstructionText.Format(instructions[^1])} would fall through into the branch slots after the moved code at 0x{newAddress:x}: give an address to continue at");
        return new RelocatedCode(oldAddress, newAddress, bytes, offsets);
    }

    private static byte[] Encode(List<Instruction> block, ulong newAddress, List<Instruction> original, ulong oldAddress, out uint[] newOffsets)
    {
        var writer = new ByteListCodeWriter();
        if (!BlockEncoder.TryEncode(64, new InstructionBlock(writer, block, newAddress), out var error, out var result,
                BlockEncoderOptions.ReturnNewInstructionOffsets))
            throw new RelocationException(DescribeEncodeFailure(original, oldAddress, newAddress, error));
        newOffsets = result.NewInstructionOffsets;
        return [.. writer.Bytes];
    }

    // Where code that follows these instructions would start: the offset Iced gives a marker placed after them.
    private static uint CodeLength(List<Instruction> instructions, ulong newAddress)
    {
        var withMarker = new List<Instruction>(instructions) { Instruction.Create(Code.Nopd) };
        var writer = new ByteListCodeWriter();
        if (!BlockEncoder.TryEncode(64, new InstructionBlock(writer, withMarker, newAddress), out var error, out var result,
                BlockEncoderOptions.ReturnNewInstructionOffsets))
            throw new RelocationException($"cannot relocate the code to 0x{newAddress:x}: {error}");
        return result.NewInstructionOffsets[^1];
    }

    // Only jmp, jcc and call have rewrites that behave exactly like the original; loop, jrcxz and
    // xbegin out of reach would become sequences with other flags, lengths or abort semantics.
    private static void RefuseRewrite(in Instruction instruction)
    {
        if (instruction.IsJmpShortOrNear || instruction.IsJccShortOrNear || instruction.IsCallNear)
            return;
        throw new RelocationException(
            $"{InstructionText.Format(instruction)} cannot reach 0x{instruction.NearBranchTarget:x} from its new address: its displacement has no longer form");
    }

    private static List<Instruction> DecodeAll(ReadOnlySpan<byte> code, ulong address)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code.ToArray()), address);
        var end = address + (ulong)code.Length;
        var instructions = new List<Instruction>();
        while (decoder.IP < end)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
                throw new InvalidInstructionException(instruction.IP, decoder.LastError == DecoderError.NoMoreBytes
                    ? $"the instruction at 0x{instruction.IP:x} is cut off by the end of the code (or invalid): relocate whole instructions only"
                    : $"the bytes at 0x{instruction.IP:x} are not a valid x86-64 instruction");
            instructions.Add(instruction);
        }
        return instructions;
    }

    // A branch into the moved bytes would land in the original copy, which the detour overwrites.
    private static void RefuseBranchIntoMovedRange(in Instruction instruction, ulong start, ulong end)
    {
        if (!IsRelativeBranch(instruction))
            return;
        var target = instruction.NearBranchTarget;
        if (target >= start && target < end)
            throw new RelocationException(
                $"{InstructionText.Format(instruction)} branches back into the moved range 0x{start:x}-0x{end:x}");
    }

    private static bool IsRelativeBranch(in Instruction instruction) =>
        instruction.IsJmpShortOrNear || instruction.IsJccShortOrNear || instruction.IsCallNear
        || instruction.IsLoop || instruction.IsLoopcc || instruction.IsJcxShort
        || instruction.Code is Code.Xbegin_rel32 or Code.Xbegin_rel16;

    private static string DescribeEncodeFailure(List<Instruction> instructions, ulong oldAddress, ulong newAddress, string error)
    {
        foreach (var instruction in instructions)
        {
            if (!instruction.IsIPRelativeMemoryOperand)
                continue;
            var approximateNewIp = newAddress + (instruction.IP - oldAddress);
            var distance = (long)(instruction.IPRelativeMemoryAddress - approximateNewIp);
            if (distance is < int.MinValue or > int.MaxValue)
                return $"{InstructionText.Format(instruction)} addresses 0x{instruction.IPRelativeMemoryAddress:x}, beyond ±2 GiB of 0x{approximateNewIp:x}";
        }
        return $"cannot relocate the code at 0x{oldAddress:x} to 0x{newAddress:x}: {error}";
    }
}

/// <summary>Code moved by <see cref="Relocator.Relocate"/>: its new bytes and where each instruction went.</summary>
public sealed class RelocatedCode
{
    private readonly (int Old, int New)[] _offsets;

    internal RelocatedCode(ulong oldAddress, ulong newAddress, byte[] bytes, (int Old, int New)[] offsets)
    {
        OldAddress = oldAddress;
        NewAddress = newAddress;
        Bytes = bytes;
        _offsets = offsets;
    }

    /// <summary>Where the code came from.</summary>
    public ulong OldAddress { get; }

    /// <summary>Where the new bytes must be placed.</summary>
    public ulong NewAddress { get; }

    /// <summary>The relocated instructions (and any jump back and its data), ready to write at <see cref="NewAddress"/>.</summary>
    public ReadOnlyMemory<byte> Bytes { get; }

    /// <summary>
    /// The new address of the instruction that started at <paramref name="oldInstructionAddress"/>: where a thread
    /// stopped there must resume. Null when no moved instruction started exactly there.
    /// </summary>
    public ulong? MapAddress(ulong oldInstructionAddress)
    {
        foreach (var (oldOffset, newOffset) in _offsets)
            if (OldAddress + (ulong)oldOffset == oldInstructionAddress)
                return NewAddress + (ulong)newOffset;
        return null;
    }
}

/// <summary>Code that cannot be moved to a new address without changing what it does.</summary>
public sealed class RelocationException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception with a message that names the instruction.</summary>
    public RelocationException(string message) : base(message)
    {
    }
}
