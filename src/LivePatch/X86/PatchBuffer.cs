using System.Runtime.InteropServices;
using Iced.Intel;
using LivePatch.X86.Internal;

namespace LivePatch.X86;

/// <summary>
/// The buffer every patcher writes a site's new bytes into before the whole site is poked at once
/// (the kernel's <c>insnbuf</c>). It knows the site's final address, so rel32 branches are encoded
/// for where the bytes will run; <see cref="Fill"/> pads what is left with NOPs.
/// </summary>
public sealed class PatchBuffer
{
    /// <summary>The longest site one buffer may cover, in bytes (the kernel's <c>MAX_PATCH_LEN</c>).</summary>
    public const int MaxPatchLength = 254;

    private readonly byte[] _bytes;

    /// <summary>Creates an empty buffer for the site of <paramref name="siteLength"/> bytes at <paramref name="address"/>.</summary>
    /// <exception cref="PatchTooLongException">The site is longer than <see cref="MaxPatchLength"/>.</exception>
    public PatchBuffer(ulong address, int siteLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(siteLength);
        if (siteLength > MaxPatchLength)
            throw new PatchTooLongException(address, MaxPatchLength, siteLength,
                $"the site of {siteLength} bytes at 0x{address:x} is longer than the {MaxPatchLength}-byte patch limit");
        Address = address;
        _bytes = new byte[siteLength];
    }

    /// <summary>The address of the site's first byte.</summary>
    public ulong Address { get; }

    /// <summary>The site's length: the number of bytes the buffer will hand to the poker.</summary>
    public int Capacity => _bytes.Length;

    /// <summary>How many bytes have been written so far.</summary>
    public int Length { get; private set; }

    /// <summary>The address the next written byte will have.</summary>
    public ulong NextAddress => Address + (ulong)Length;

    /// <summary>True once every byte of the site has been written (after <see cref="Fill"/>).</summary>
    public bool IsComplete => Length == Capacity;

    /// <summary>The bytes written so far.</summary>
    public ReadOnlySpan<byte> Written => _bytes.AsSpan(0, Length);

    /// <summary>The whole site's new bytes.</summary>
    /// <exception cref="InvalidOperationException">The buffer is not complete: call <see cref="Fill"/> first.</exception>
    public ReadOnlySpan<byte> Bytes => IsComplete
        ? _bytes
        : throw new InvalidOperationException($"the patch for 0x{Address:x} holds {Length} of {Capacity} bytes: Fill it before use");

    /// <summary>Appends raw instruction bytes.</summary>
    /// <exception cref="PatchTooLongException">They do not fit in what is left of the site.</exception>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(Reserve(bytes.Length));
        Length += bytes.Length;
    }

    /// <summary>Appends <c>jmp rel32</c> to <paramref name="target"/>, encoded for <see cref="NextAddress"/>.</summary>
    public void WriteJump(ulong target)
    {
        Branch.WriteJump(Reserve(Branch.Rel32Length), NextAddress, target);
        Length += Branch.Rel32Length;
    }

    /// <summary>Appends <c>call rel32</c> to <paramref name="target"/>, encoded for <see cref="NextAddress"/>.</summary>
    public void WriteCall(ulong target)
    {
        Branch.WriteCall(Reserve(Branch.Rel32Length), NextAddress, target);
        Length += Branch.Rel32Length;
    }

    /// <summary>
    /// Encodes <paramref name="instructions"/> (built with Iced's <c>Instruction.Create*</c> or decoded)
    /// as code running at <see cref="NextAddress"/> and appends them; branch targets and RIP-relative
    /// operands keep the absolute addresses the instructions name.
    /// </summary>
    /// <exception cref="PatchTooLongException">The encoded instructions do not fit.</exception>
    /// <exception cref="RelocationException">Iced cannot encode them for this address.</exception>
    public void WriteInstructions(IEnumerable<Instruction> instructions)
    {
        var list = instructions as IList<Instruction> ?? [.. instructions];
        var writer = new ByteListCodeWriter();
        if (!BlockEncoder.TryEncode(64, new InstructionBlock(writer, list, NextAddress), out var error, out _))
            throw new RelocationException($"cannot encode {list.Count} instruction(s) at 0x{NextAddress:x}: {error}");
        Write(CollectionsMarshal.AsSpan(writer.Bytes));
    }

    /// <summary>Assembles what Iced's <see cref="Assembler"/> holds (labels included) at <see cref="NextAddress"/> and appends it.</summary>
    /// <exception cref="PatchTooLongException">The assembled code does not fit.</exception>
    /// <exception cref="RelocationException">Iced cannot assemble it for this address.</exception>
    public void Write(Assembler assembler)
    {
        ArgumentNullException.ThrowIfNull(assembler);
        var writer = new ByteListCodeWriter();
        if (!assembler.TryAssemble(writer, NextAddress, out var error, out _))
            throw new RelocationException($"cannot assemble {assembler.Instructions.Count} instruction(s) at 0x{NextAddress:x}: {error}");
        Write(CollectionsMarshal.AsSpan(writer.Bytes));
    }

    /// <summary>Appends <paramref name="count"/> bytes of the fewest NOPs (code that must end at the end of the site, such as a call, goes after them).</summary>
    /// <exception cref="PatchTooLongException">They do not fit in what is left of the site.</exception>
    public void WriteNops(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Nops.Fill(Reserve(count));
        Length += count;
    }

    /// <summary>Pads the rest of the site with the fewest NOPs; afterwards the buffer is complete.</summary>
    public void Fill()
    {
        Nops.Fill(_bytes.AsSpan(Length));
        Length = Capacity;
    }

    private Span<byte> Reserve(int count)
    {
        if (count > Capacity - Length)
            throw new PatchTooLongException(Address, Capacity, Length + count,
                $"the replacement needs {Length + count} bytes but the site at 0x{Address:x} has {Capacity}");
        return _bytes.AsSpan(Length, count);
    }
}

/// <summary>A replacement longer than its site, or a site longer than <see cref="PatchBuffer.MaxPatchLength"/>.</summary>
public sealed class PatchTooLongException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for the site at <paramref name="address"/>.</summary>
    public PatchTooLongException(ulong address, int capacity, int requiredLength, string message)
        : base(message)
    {
        Address = address;
        Capacity = capacity;
        RequiredLength = requiredLength;
    }

    /// <summary>The site's address.</summary>
    public ulong Address { get; }

    /// <summary>The most bytes the site or buffer can hold.</summary>
    public int Capacity { get; }

    /// <summary>The bytes that were asked for.</summary>
    public int RequiredLength { get; }
}
