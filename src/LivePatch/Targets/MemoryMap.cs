using System.Globalization;

namespace LivePatch.Targets;

/// <summary>What a mapping may be used for, from the <c>rwxp</c> column of <c>/proc/PID/maps</c>.</summary>
[Flags]
public enum MemoryProtection
{
    /// <summary>No access.</summary>
    None = 0,
    /// <summary>Readable.</summary>
    Read = 1,
    /// <summary>Writable.</summary>
    Write = 2,
    /// <summary>Executable.</summary>
    Execute = 4,
}

/// <summary>One line of <c>/proc/PID/maps</c>: a mapped range of a process's address space.</summary>
/// <param name="Start">First address.</param>
/// <param name="End">One past the last address.</param>
/// <param name="Protection">Read, write and execute permissions.</param>
/// <param name="IsShared">True for a shared mapping (<c>s</c>), false for private (<c>p</c>).</param>
/// <param name="FileOffset">Offset in the mapped file.</param>
/// <param name="Inode">Inode of the mapped file; 0 for anonymous memory.</param>
/// <param name="Path">The file or pseudo-name (<c>[heap]</c>, <c>[stack]</c>, <c>[vdso]</c>), or empty.</param>
public readonly record struct MemoryRegion(ulong Start, ulong End, MemoryProtection Protection, bool IsShared, ulong FileOffset, ulong Inode, string Path)
{
    /// <summary>Size in bytes.</summary>
    public ulong Size => End - Start;

    /// <summary>True when <paramref name="address"/> lies inside the region.</summary>
    public bool Contains(ulong address) => address >= Start && address < End;

    /// <summary>True when the region maps a regular file (not anonymous memory or a pseudo-file).</summary>
    public bool IsFile => Inode != 0 && Path.StartsWith('/');

    /// <summary>The mapped file's device as the maps line gives it (<c>fd:01</c>: major and minor in hex); empty when unknown.</summary>
    public string Device { get; init; } = "";
}

/// <summary>A process's address space as <c>/proc/PID/maps</c> lists it, sorted by address.</summary>
public sealed class MemoryMap
{
    private MemoryMap(IReadOnlyList<MemoryRegion> regions) => Regions = regions;

    /// <summary>The mapped regions, in address order.</summary>
    public IReadOnlyList<MemoryRegion> Regions { get; }

    /// <summary>Reads the map of process <paramref name="pid"/>.</summary>
    /// <exception cref="TargetException">The process does not exist or cannot be read.</exception>
    public static MemoryMap Read(int pid)
    {
        var text = TargetFiles.ReadAllText(pid, "maps");
        return Parse(text);
    }

    /// <summary>Parses the text of a <c>/proc/PID/maps</c> file.</summary>
    internal static MemoryMap Parse(string text)
    {
        var regions = new List<MemoryRegion>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            regions.Add(ParseLine(line));
        return new MemoryMap(regions);
    }

    /// <summary>This map with <paramref name="region"/> mapped too (to plan placements without mapping anything).</summary>
    internal MemoryMap With(MemoryRegion region) => new([.. Regions.Append(region).OrderBy(r => r.Start)]);

    /// <summary>The region containing <paramref name="address"/>, or null.</summary>
    public MemoryRegion? Find(ulong address)
    {
        foreach (var region in Regions)
            if (region.Contains(address))
                return region;
        return null;
    }

    private static MemoryRegion ParseLine(string line)
    {
        // 55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234   /usr/bin/x (deleted)
        var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 5)
            throw new FormatException($"unexpected line in /proc/PID/maps: '{line}'");
        var range = fields[0].Split('-');
        var perms = fields[1];
        var protection = (perms[0] == 'r' ? MemoryProtection.Read : 0)
            | (perms[1] == 'w' ? MemoryProtection.Write : 0)
            | (perms[2] == 'x' ? MemoryProtection.Execute : 0);
        return new MemoryRegion(
            Hex(range[0]), Hex(range[1]), protection, perms[3] == 's', Hex(fields[2]),
            ulong.Parse(fields[4], CultureInfo.InvariantCulture),
            fields.Length > 5 ? fields[5].Trim() : "")
        {
            Device = fields[3],
        };
    }

    private static ulong Hex(string text) => ulong.Parse(text, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}
