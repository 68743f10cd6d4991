namespace LivePatch.Elf.ElfInternal;

/// <summary>DWARF's variable-length integers (LEB128), read from a span; bits past 64 are dropped.</summary>
internal static class Leb128
{
    /// <summary>Reads an unsigned LEB128 at <paramref name="position"/> and moves past it; false when it runs past the end (the position then stays).</summary>
    public static bool TryReadUnsigned(ReadOnlySpan<byte> data, ref int position, out ulong value)
    {
        value = 0;
        for (int at = position, shift = 0; at < data.Length; at++, shift += 7)
        {
            var b = data[at];
            if (shift < 64)
                value |= (ulong)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
            {
                position = at + 1;
                return true;
            }
        }
        value = 0;
        return false;
    }

    /// <summary>Reads a signed LEB128 at <paramref name="position"/> and moves past it; false when it runs past the end (the position then stays).</summary>
    public static bool TryReadSigned(ReadOnlySpan<byte> data, ref int position, out long value)
    {
        value = 0;
        for (int at = position, shift = 0; at < data.Length; at++)
        {
            var b = data[at];
            if (shift < 64)
                value |= (long)(b & 0x7f) << shift;
            shift += 7;
            if ((b & 0x80) == 0)
            {
                if (shift < 64 && (b & 0x40) != 0)
                    value |= -1L << shift;
                position = at + 1;
                return true;
            }
        }
        value = 0;
        return false;
    }
}
