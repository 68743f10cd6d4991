using LivePatch.Elf;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>
/// MiniDebugInfo, as Fedora's find-debuginfo embeds it in a stripped binary: section <c>.gnu_debugdata</c> holds an
/// xz-compressed ELF whose <c>.symtab</c> names the functions stripping removed (static ones, and global ones not in
/// <c>.dynsym</c>). gdb reads it when no separate debug file is found; so does LivePatch. It is decompressed with
/// the system's liblzma, never beyond <see cref="SizeLimit"/>.
/// </summary>
internal static class MiniDebugInfo
{
    /// <summary>The section holding it.</summary>
    public const string Section = ".gnu_debugdata";

    /// <summary>The most a <c>.gnu_debugdata</c> may decompress to: a larger one is refused as corrupt or hostile.</summary>
    public const long SizeLimit = 256L << 20;

    // What the decoder itself may allocate (its dictionary): xz -9 needs 65 MiB.
    private const ulong DecoderMemoryLimit = 256UL << 20;

    /// <summary>
    /// The ELF in <paramref name="module"/>'s <c>.gnu_debugdata</c> (named <c>NAME.gnu_debugdata</c> after
    /// <paramref name="name"/>), or null when it has none or it cannot be read; then <paramref name="looked"/> says why.
    /// </summary>
    public static (ElfFile File, string Path)? Read(ElfFile module, string name, List<string> looked)
    {
        if (module.FindSection(Section) is not { } section)
            return null;
        var source = name + Section;
        try
        {
            var elf = ElfFile.Parse(Decompress(module.GetSectionData(section).Span, SizeLimit));
            if (module.BuildId is { } id && elf.BuildId is { } other && other != id)
            {
                looked.Add($"{source} (its MiniDebugInfo has build-id {other}, not {id})");
                return null;
            }
            return (elf, source);
        }
        catch (Exception error) when (error is InvalidDataException or ElfFormatException)
        {
            looked.Add($"{source} (MiniDebugInfo could not be read: {error.Message})");
            return null;
        }
    }

    /// <summary>The bytes of the xz stream <paramref name="compressed"/>, refused beyond <paramref name="limit"/> bytes.</summary>
    /// <exception cref="InvalidDataException">liblzma cannot be loaded, the data is not a whole xz stream, or it decompresses to more than the limit.</exception>
    internal static unsafe byte[] Decompress(ReadOnlySpan<byte> compressed, long limit)
    {
        var output = new MemoryStream();
        var chunk = new byte[Math.Min(1 << 20, limit + 1)];
        var stream = default(LzmaStream);
        try
        {
            var started = Lzma.StreamDecoder(&stream, DecoderMemoryLimit, 0);
            if (started != Lzma.Ok)
                throw new InvalidDataException($"{Lzma.Library} could not start a decoder: {Lzma.Describe(started)}");
        }
        catch (Exception error) when (error is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            throw new InvalidDataException($"{Lzma.Library} could not be loaded (install xz-utils' liblzma5): {error.Message}", error);
        }
        try
        {
            fixed (byte* input = compressed)
            {
                stream.NextIn = input;
                stream.AvailIn = (nuint)compressed.Length;
                while (true)
                {
                    int result;
                    fixed (byte* into = chunk)
                    {
                        stream.NextOut = into;
                        stream.AvailOut = (nuint)chunk.Length;
                        result = Lzma.Code(&stream, Lzma.Finish);
                    }
                    output.Write(chunk, 0, chunk.Length - (int)stream.AvailOut);
                    if (output.Length > limit)
                        throw new InvalidDataException($"it decompresses to more than {limit >> 20} MiB");
                    if (result == Lzma.StreamEnd)
                        return output.ToArray();
                    if (result != Lzma.Ok)
                        throw new InvalidDataException($"xz data at byte {stream.TotalIn}: {Lzma.Describe(result)}");
                }
            }
        }
        finally
        {
            Lzma.End(&stream);
        }
    }
}
