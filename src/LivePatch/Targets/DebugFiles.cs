using System.Buffers.Binary;
using LivePatch.Elf;

namespace LivePatch.Targets;

/// <summary>
/// Finds a stripped module's separate debug file the way gdb does: by build-id
/// (<c>DIR/.build-id/ab/cdef….debug</c>), then by <c>.gnu_debuglink</c> (its CRC32 checked) next to the module, in its
/// <c>.debug/</c> directory and under each debug directory. The debug directories are those the caller gave
/// (<c>--debug-dir</c>), then <c>LIVEPATCH_DEBUG_DIR</c>'s (colon-separated), then <c>/usr/lib/debug</c>. A debug file
/// whose build-id differs from the module's is never used.
/// </summary>
internal static class DebugFiles
{
    /// <summary>The variable naming debug directories besides <c>/usr/lib/debug</c>.</summary>
    public const string DirectoryVariable = "LIVEPATCH_DEBUG_DIR";

    /// <summary>Where distributions install debug files.</summary>
    public const string SystemDirectory = "/usr/lib/debug";

    /// <summary>
    /// The debug directories, in the order they are searched: <paramref name="given"/> (each must exist), then
    /// <c>LIVEPATCH_DEBUG_DIR</c>'s, then <c>/usr/lib/debug</c>.
    /// </summary>
    /// <exception cref="DebugDirectoryNotFoundException">A directory of <paramref name="given"/> does not exist.</exception>
    public static IReadOnlyList<string> Directories(IReadOnlyList<string> given)
    {
        foreach (var directory in given)
        {
            if (string.IsNullOrEmpty(directory) || !Directory.Exists(directory))
                throw new DebugDirectoryNotFoundException(directory ?? "");
        }
        IEnumerable<string> all = [.. given.Select(Path.GetFullPath),
            .. (Environment.GetEnvironmentVariable(DirectoryVariable) ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries), SystemDirectory];
        return [.. all.Distinct(StringComparer.Ordinal)];
    }

    /// <summary>
    /// The debug file of <paramref name="module"/> (mapped from <paramref name="path"/>), or null; <paramref name="looked"/>
    /// gets every place looked at, with why a file there was not taken.
    /// </summary>
    public static (ElfFile File, string Path)? Find(ElfFile module, string path, IReadOnlyList<string> directories, List<string> looked)
    {
        if (module.BuildId is { Length: > 2 } id)
        {
            foreach (var directory in directories)
                if (Candidate(Path.Combine(directory, ".build-id", id[..2], id[2..] + ".debug"), module, null, looked) is { } found)
                    return found;
        }
        if (DebugLink(module) is not { } link)
            return null;
        var moduleDirectory = Path.GetDirectoryName(path.EndsWith(" (deleted)", StringComparison.Ordinal) ? path[..^10] : path) ?? "/";
        var places = new List<string> { Path.Combine(moduleDirectory, link.Name), Path.Combine(moduleDirectory, ".debug", link.Name) };
        foreach (var directory in directories)
        {
            places.Add(Path.Combine(directory, moduleDirectory.TrimStart('/'), link.Name));
            places.Add(Path.Combine(directory, link.Name));
        }
        foreach (var place in places.Distinct())
            if (Candidate(place, module, link.Crc, looked) is { } found)
                return found;
        return null;
    }

    private static (ElfFile File, string Path)? Candidate(string place, ElfFile module, uint? crc, List<string> looked)
    {
        if (!File.Exists(place))
        {
            looked.Add(place);
            return null;
        }
        try
        {
            var bytes = File.ReadAllBytes(place);
            if (crc is { } expected && Crc32(bytes) != expected)
            {
                looked.Add($"{place} (its CRC does not match the module's .gnu_debuglink)");
                return null;
            }
            var debug = ElfFile.Parse(bytes);
            if (module.BuildId is { } id && debug.BuildId != id)
            {
                looked.Add($"{place} (build-id {debug.BuildId ?? "none"}, not {id})");
                return null;
            }
            return (debug, place);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or ElfFormatException)
        {
            looked.Add($"{place} ({error.Message})");
            return null;
        }
    }

    // .gnu_debuglink: the debug file's name, NUL-terminated, padded to 4 bytes, then the CRC32 of its contents.
    private static (string Name, uint Crc)? DebugLink(ElfFile module)
    {
        if (module.FindSection(".gnu_debuglink") is not { } section)
            return null;
        var data = module.GetSectionData(section).Span;
        var end = data.IndexOf((byte)0);
        if (end <= 0)
            return null;
        var crcAt = (end + 4) & ~3;
        if (crcAt + 4 > data.Length)
            return null;
        return (System.Text.Encoding.UTF8.GetString(data[..end]), BinaryPrimitives.ReadUInt32LittleEndian(data[crcAt..]));
    }

    private static readonly uint[] CrcTable = BuildCrcTable();

    private static uint[] BuildCrcTable()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            var c = n;
            for (var k = 0; k < 8; k++)
                c = (c & 1) != 0 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[n] = c;
        }
        return table;
    }

    /// <summary>The CRC32 (IEEE, as gdb and objcopy --add-gnu-debuglink compute it) of <paramref name="bytes"/>.</summary>
    internal static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        var crc = 0xffffffffu;
        foreach (var b in bytes)
            crc = CrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
        return crc ^ 0xffffffffu;
    }
}
