using LivePatch.Elf.ElfInternal;

namespace LivePatch.Elf;

/// <summary>
/// The one exception the ELF reader throws for bytes that are not a well-formed ELF64
/// little-endian x86-64 file; the message names the field that lies and where it is.
/// </summary>
public sealed class ElfFormatException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>
    /// Creates the exception for a problem found at <paramref name="offset"/> in the file; control characters the
    /// message quotes from the file (in a section's name, say) are shown as <c>\uXXXX</c>, so that it stays one line.
    /// </summary>
    public ElfFormatException(string message, long offset)
        : base($"{PrintableText.Escape(message)} [at file offset 0x{offset:x}]")
    {
        Offset = offset;
    }

    /// <summary>File offset of the field or structure that is wrong.</summary>
    public long Offset { get; }
}
