namespace LivePatch.X86;

/// <summary>
/// The recommended x86-64 NOP forms of 1 to 11 bytes, and padding of any length with the
/// fewest of them (the kernel's <c>add_nops</c>).
/// </summary>
public static class Nops
{
    /// <summary>The longest single NOP instruction this table holds, in bytes.</summary>
    public const int MaxLength = 11;

    /// <summary>Returns the recommended single NOP instruction of exactly <paramref name="length"/> bytes (1 to 11).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is outside 1..11.</exception>
    public static ReadOnlySpan<byte> Get(int length) => length switch
    {
        1 => [0x90],
        2 => [0x66, 0x90],
        3 => [0x0f, 0x1f, 0x00],
        4 => [0x0f, 0x1f, 0x40, 0x00],
        5 => [0x0f, 0x1f, 0x44, 0x00, 0x00],
        6 => [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        7 => [0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        8 => [0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        9 => [0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        10 => [0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        11 => [0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        _ => throw new ArgumentOutOfRangeException(nameof(length), length, $"a single NOP is 1 to {MaxLength} bytes long"),
    };

    /// <summary>
    /// Fills <paramref name="destination"/> with the fewest NOP instructions that exactly cover it
    /// (longest forms first) and returns how many instructions were written.
    /// </summary>
    public static int Fill(Span<byte> destination)
    {
        var count = 0;
        while (!destination.IsEmpty)
        {
            var length = Math.Min(destination.Length, MaxLength);
            Get(length).CopyTo(destination);
            destination = destination[length..];
            count++;
        }
        return count;
    }

    /// <summary>The number of instructions <see cref="Fill"/> writes for <paramref name="length"/> bytes.</summary>
    public static int CountFor(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        return (length + MaxLength - 1) / MaxLength;
    }
}
