using Iced.Intel;
using LivePatch.X86.Internal;

namespace LivePatch.X86;

/// <summary>Encodes the 5-byte <c>jmp rel32</c> and <c>call rel32</c> that detours and call sites use.</summary>
public static class Branch
{
    /// <summary>Length of <c>jmp rel32</c> and <c>call rel32</c>, in bytes.</summary>
    public const int Rel32Length = 5;

    /// <summary>True when a 5-byte branch placed at <paramref name="address"/> can reach <paramref name="target"/>.</summary>
    public static bool CanReach(ulong address, ulong target) => TryDisplacement(address, target, out _);

    /// <summary>Writes <c>jmp rel32</c> at the start of <paramref name="destination"/>, for code that will live at <paramref name="address"/>.</summary>
    /// <exception cref="BranchOutOfRangeException">The target is beyond ±2 GiB of the branch.</exception>
    public static void WriteJump(Span<byte> destination, ulong address, ulong target) =>
        Write(destination, Code.Jmp_rel32_64, address, target);

    /// <summary>Writes <c>call rel32</c> at the start of <paramref name="destination"/>, for code that will live at <paramref name="address"/>.</summary>
    /// <exception cref="BranchOutOfRangeException">The target is beyond ±2 GiB of the branch.</exception>
    public static void WriteCall(Span<byte> destination, ulong address, ulong target) =>
        Write(destination, Code.Call_rel32_64, address, target);

    /// <summary>
    /// Where the <c>jmp rel32</c> that <paramref name="code"/> starts with goes, when it starts with one and the code
    /// lives at <paramref name="address"/>; false for any other instruction (a short jump included).
    /// </summary>
    public static bool TryReadJump(ReadOnlySpan<byte> code, ulong address, out ulong target)
    {
        target = 0;
        if (code.Length < Rel32Length)
            return false;
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code[..Rel32Length].ToArray()), address);
        decoder.Decode(out var instruction);
        if (instruction.Code != Code.Jmp_rel32_64)
            return false;
        target = instruction.NearBranchTarget;
        return true;
    }

    private static void Write(Span<byte> destination, Code code, ulong address, ulong target)
    {
        if (destination.Length < Rel32Length)
            throw new ArgumentException($"a rel32 branch needs {Rel32Length} bytes, the destination has {destination.Length}", nameof(destination));
        if (!TryDisplacement(address, target, out _))
            throw new BranchOutOfRangeException(address, target);

        var writer = new ByteListCodeWriter();
        var encoder = Encoder.Create(64, writer);
        var instruction = Instruction.CreateBranch(code, target);
        if (!encoder.TryEncode(instruction, address, out var length, out var error) || length != Rel32Length)
            throw new InvalidOperationException($"Iced could not encode {code} from 0x{address:x} to 0x{target:x}: {error}");
        writer.Bytes.CopyTo(destination);
    }

    private static bool TryDisplacement(ulong address, ulong target, out int displacement)
    {
        var distance = (long)(target - (address + Rel32Length));
        displacement = (int)distance;
        return distance is >= int.MinValue and <= int.MaxValue;
    }
}

/// <summary>A rel32 branch was asked to reach a target more than ±2 GiB away.</summary>
public sealed class BranchOutOfRangeException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for a branch at <paramref name="address"/> to <paramref name="target"/>.</summary>
    public BranchOutOfRangeException(ulong address, ulong target)
        : base($"a rel32 branch at 0x{address:x} cannot reach 0x{target:x}: the distance is beyond ±2 GiB")
    {
        Address = address;
        Target = target;
    }

    /// <summary>Where the branch would have been placed.</summary>
    public ulong Address { get; }

    /// <summary>The address it was asked to reach.</summary>
    public ulong Target { get; }
}
