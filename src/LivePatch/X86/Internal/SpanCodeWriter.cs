using Iced.Intel;

namespace LivePatch.X86.Internal;

/// <summary>An Iced <see cref="CodeWriter"/> that appends to a growable byte list.</summary>
internal sealed class ByteListCodeWriter : CodeWriter
{
    public List<byte> Bytes { get; } = [];

    public override void WriteByte(byte value) => Bytes.Add(value);
}
