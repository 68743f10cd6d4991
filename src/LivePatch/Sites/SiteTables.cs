using System.Buffers.Binary;
using LivePatch.Elf;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>
/// A site of <c>LP_ALTERNATIVE</c>: <see cref="Length"/> bytes of original code at <see cref="Address"/> that may be
/// replaced by the <see cref="ReplacementLength"/> bytes at <see cref="ReplacementAddress"/> when the CPU has <see cref="Feature"/>.
/// </summary>
/// <param name="Address">Virtual address of the site in the module (link-time address).</param>
/// <param name="Length">Length of the site, original instructions plus NOP padding.</param>
/// <param name="ReplacementAddress">Virtual address of the replacement bytes in <c>.lp.altinstr_replacement</c>.</param>
/// <param name="ReplacementLength">Length of the replacement, never more than <paramref name="Length"/>.</param>
/// <param name="Feature">The CPU feature that selects the replacement.</param>
public readonly record struct AlternativeSite(ulong Address, int Length, ulong ReplacementAddress, int ReplacementLength, CpuFeature Feature);

/// <summary>A <c>lock</c> prefix (byte 0xf0) recorded by <c>LP_LOCK_PREFIX</c>.</summary>
/// <param name="Address">Virtual address of the prefix byte in the module (link-time address).</param>
public readonly record struct LockPrefixSite(ulong Address);

/// <summary>One <c>LP_STATIC_BRANCH</c> site: a 5-byte NOP (key off) or <c>jmp</c> to the on path (key on).</summary>
/// <param name="Address">The site's address in the module.</param>
/// <param name="Target">The on path's address, where the jump goes when the key is on.</param>
/// <param name="Key">The key's name.</param>
public readonly record struct StaticKeySite(ulong Address, ulong Target, string Key);

/// <summary>
/// The build-time site tables of a linked module, written by the macros of <c>native/include/livepatch/sites.h</c>;
/// docs/sites.md gives their formats byte by byte.
/// </summary>
public sealed partial class SiteTables
{
    /// <summary>Section of <c>LP_ALTERNATIVE</c> entries.</summary>
    public const string AlternativesTable = ".lp.altinstructions";

    /// <summary>Section holding the replacement instructions of <c>LP_ALTERNATIVE</c>.</summary>
    public const string ReplacementSection = ".lp.altinstr_replacement";

    /// <summary>Section of <c>LP_LOCK_PREFIX</c> entries.</summary>
    public const string LockPrefixTable = ".lp.smp_locks";

    /// <summary>Size of one <c>.lp.altinstructions</c> entry.</summary>
    public const int AlternativeEntrySize = 12;

    /// <summary>Size of one <c>.lp.smp_locks</c> entry.</summary>
    public const int LockPrefixEntrySize = 4;

    /// <summary>Section of <c>LP_STATIC_BRANCH</c> entries.</summary>
    public const string StaticKeyTable = ".lp.static_keys";

    /// <summary>Section holding the static keys' names.</summary>
    public const string StaticKeyNames = ".lp.static_key_names";

    /// <summary>Size of one <c>.lp.static_keys</c> entry.</summary>
    public const int StaticKeyEntrySize = 12;

    /// <summary>The 5-byte NOP of a static-key site that is off.</summary>
    public static ReadOnlySpan<byte> StaticKeyNop => [0x0f, 0x1f, 0x44, 0x00, 0x00];

    private const byte LockPrefix = 0xf0;

    private SiteTables(IReadOnlyList<AlternativeSite> alternatives, IReadOnlyList<LockPrefixSite> lockPrefixes, IReadOnlyList<StaticKeySite> staticKeys)
    {
        Alternatives = alternatives;
        LockPrefixes = lockPrefixes;
        StaticKeys = staticKeys;
    }

    /// <summary>The static-key sites, in table order; empty when the module has no table.</summary>
    public IReadOnlyList<StaticKeySite> StaticKeys { get; }

    /// <summary>The alternative sites, in table order; empty when the module has no table.</summary>
    public IReadOnlyList<AlternativeSite> Alternatives { get; }

    /// <summary>The lock-prefix sites, in table order; empty when the module has no table.</summary>
    public IReadOnlyList<LockPrefixSite> LockPrefixes { get; }

    /// <summary>
    /// Reads and validates the site tables of a linked executable or shared object (ET_EXEC / ET_DYN).
    /// Relocatable objects are not supported yet: their offsets are still PC32 relocations.
    /// </summary>
    /// <exception cref="SiteTableException">A table is malformed or an entry points somewhere it must not.</exception>
    public static SiteTables Read(ElfFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var alternatives = file.FindSection(AlternativesTable);
        var locks = file.FindSection(LockPrefixTable);
        var keys = file.FindSection(StaticKeyTable);
        var calls = file.FindSection(CallSiteTable);
        var clobbers = file.FindSection(OpClobbersTable);
        if (file.Type == ElfType.Relocatable && (alternatives is not null || locks is not null || keys is not null || calls is not null || clobbers is not null))
        {
            throw new SiteTableException(alternatives?.Name ?? locks?.Name ?? keys?.Name ?? calls?.Name ?? OpClobbersTable, null,
                "relocatable objects are not supported yet; link the module first");
        }

        var module = new ModuleImage(file);
        return new SiteTables(
            alternatives is null ? [] : ReadAlternatives(file, alternatives, module),
            locks is null ? [] : ReadLockPrefixes(file, locks, module),
            keys is null ? [] : ReadStaticKeys(file, keys, module))
        {
            CallSites = calls is null ? [] : ReadCallSites(file, calls, module),
            OpClobbers = clobbers is null ? [] : ReadOpClobbers(file, clobbers, module),
        };
    }

    private static List<AlternativeSite> ReadAlternatives(ElfFile file, ElfSection table, ModuleImage module)
    {
        var data = TableData(file, table, AlternativeEntrySize).Span;
        var replacements = file.FindSection(ReplacementSection);
        var sites = new List<AlternativeSite>(data.Length / AlternativeEntrySize);
        for (var index = 0; index * AlternativeEntrySize < data.Length; index++)
        {
            var offset = index * AlternativeEntrySize;
            var entry = data.Slice(offset, AlternativeEntrySize);
            var entryAddress = table.Address + (ulong)offset;
            var site = entryAddress + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(entry);
            var replacement = entryAddress + 4 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(entry[4..]);
            var feature = BinaryPrimitives.ReadUInt16LittleEndian(entry[8..]);
            int siteLength = entry[10];
            int replacementLength = entry[11];

            SiteTableException Bad(string reason) => new(AlternativesTable, index, reason);
            if (!Enum.IsDefined((CpuFeature)feature))
                throw Bad($"unknown feature number {feature}");
            if (siteLength > PatchBuffer.MaxPatchLength)
                throw Bad($"site of {siteLength} bytes is longer than the {PatchBuffer.MaxPatchLength}-byte patch limit");
            if (replacementLength > siteLength)
                throw Bad($"replacement of {replacementLength} bytes is longer than its site of {siteLength} bytes");
            if (!module.IsExecutable(site, siteLength) || (replacements is not null && Overlaps(replacements, site, siteLength)))
                throw Bad($"site 0x{site:x}+{siteLength} is outside the executable code of the module");
            if (replacements is null || !Contains(replacements, replacement, replacementLength))
                throw Bad($"replacement 0x{replacement:x}+{replacementLength} is outside {ReplacementSection}");

            sites.Add(new AlternativeSite(site, siteLength, replacement, replacementLength, (CpuFeature)feature));
        }

        // LP_ALTERNATIVE_2 gives one site several entries: they must agree on its length, and sites must not overlap.
        RefuseOverlaps(AlternativesTable, [.. sites.Select(s => (s.Address, s.Length))], "alternative");
        return sites;
    }

    private static List<LockPrefixSite> ReadLockPrefixes(ElfFile file, ElfSection table, ModuleImage module)
    {
        var data = TableData(file, table, LockPrefixEntrySize).Span;
        var sites = new List<LockPrefixSite>(data.Length / LockPrefixEntrySize);
        for (var index = 0; index * LockPrefixEntrySize < data.Length; index++)
        {
            var offset = index * LockPrefixEntrySize;
            var site = table.Address + (ulong)offset + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(data[offset..]);
            if (!module.IsExecutable(site, 1))
                throw new SiteTableException(LockPrefixTable, index, $"lock site 0x{site:x} is outside the executable code of the module");
            var held = module.ByteAt(site);
            if (held != LockPrefix)
                throw new SiteTableException(LockPrefixTable, index, $"lock site 0x{site:x} holds 0x{held:x2}, not the lock prefix 0xf0");
            sites.Add(new LockPrefixSite(site));
        }

        return sites;
    }

    private static List<StaticKeySite> ReadStaticKeys(ElfFile file, ElfSection table, ModuleImage module)
    {
        var data = TableData(file, table, StaticKeyEntrySize).Span;
        var names = file.FindSection(StaticKeyNames);
        var namesData = names is null ? default : file.GetSectionData(names).Span;
        var sites = new List<StaticKeySite>(data.Length / StaticKeyEntrySize);
        for (var index = 0; index * StaticKeyEntrySize < data.Length; index++)
        {
            var offset = index * StaticKeyEntrySize;
            var entryAddress = table.Address + (ulong)offset;
            var site = entryAddress + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(data[offset..]);
            var target = entryAddress + 4 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(data[(offset + 4)..]);
            var name = entryAddress + 8 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(data[(offset + 8)..]);

            SiteTableException Bad(string reason) => new(StaticKeyTable, index, reason);
            if (!module.IsExecutable(site, StaticKeyNop.Length))
                throw Bad($"site 0x{site:x} is outside the executable code of the module");
            if (!module.IsExecutable(target, 1))
                throw Bad($"on path 0x{target:x} is outside the executable code of the module");
            if (names is null || name < names.Address || name - names.Address >= (ulong)namesData.Length)
                throw Bad($"key name 0x{name:x} is outside {StaticKeyNames}");
            var text = namesData[(int)(name - names.Address)..];
            var end = text.IndexOf((byte)0);
            if (end <= 0)
                throw Bad(end == 0 ? "the key name is empty" : "the key name is not NUL-terminated");
            var key = System.Text.Encoding.UTF8.GetString(text[..end]);
            var held = module.Bytes(site, StaticKeyNop.Length);
            if (!held.SequenceEqual(StaticKeyNop) && !(Branch.TryReadJump(held, site, out var jumpsTo) && jumpsTo == target))
                throw Bad($"site 0x{site:x} of key '{key}' holds {Convert.ToHexStringLower(held)}, neither a 5-byte NOP nor a jump to its on path");
            sites.Add(new StaticKeySite(site, target, key));
        }

        return sites;
    }

    private static ReadOnlyMemory<byte> TableData(ElfFile file, ElfSection table, int entrySize)
    {
        if (table.Type == ElfSectionType.NoBits)
            throw new SiteTableException(table.Name, null, "the table has no file data (SHT_NOBITS)");
        var data = file.GetSectionData(table);
        if (data.Length % entrySize != 0)
            throw new SiteTableException(table.Name, null, $"size {data.Length} is not a multiple of the {entrySize}-byte entry size");
        return data;
    }

    /// <summary>Refuses two sites that overlap; with <paramref name="sharedSites"/>, entries of one site (same address) must agree on its length.</summary>
    private static void RefuseOverlaps(string table, IReadOnlyList<(ulong Address, int Length)> sites, string kind, bool sharedSites = true)
    {
        // Tables come in address order from the linker, usually: then there is nothing to sort (100,000 sites: a
        // LINQ sort took three times as long as reading the table).
        var order = new int[sites.Count];
        for (var i = 0; i < order.Length; i++)
            order[i] = i;
        var sorted = true;
        for (var i = 1; i < sites.Count && sorted; i++)
            sorted = sites[i - 1].Address <= sites[i].Address;
        if (!sorted)
            Array.Sort(order, (x, y) => sites[x].Address != sites[y].Address ? sites[x].Address.CompareTo(sites[y].Address) : x.CompareTo(y));
        for (var k = 1; k < order.Length; k++)
        {
            var (earlier, later) = (order[k - 1], order[k]);
            var (address, length) = sites[later];
            var previous = sites[earlier];
            if (address == previous.Address && sharedSites)
            {
                if (length != previous.Length)
                    throw new SiteTableException(table, later,
                        $"{kind} site 0x{address:x} is {length} bytes long here but {previous.Length} in entry {earlier}: entries of one site must agree on its length");
                continue;
            }
            if (address < previous.Address + (ulong)previous.Length)
                throw new SiteTableException(table, later,
                    $"{kind} site 0x{address:x}+{length} overlaps the site 0x{previous.Address:x}+{previous.Length} of entry {earlier}");
        }
    }

    private static bool Contains(ElfSection section, ulong address, int length) =>
        address >= section.Address && address - section.Address <= section.Size && (ulong)length <= section.Size - (address - section.Address);

    private static bool Overlaps(ElfSection section, ulong address, int length) =>
        address < section.Address + section.Size && address + (ulong)length > section.Address;

    /// <summary>The executable, file-backed loadable segments of a linked module, addressed by virtual address.</summary>
    private sealed class ModuleImage(ElfFile file)
    {
        public bool IsExecutable(ulong address, int length) => file.ReadLoaded(address, length, executableOnly: true).Length == length;

        public ReadOnlySpan<byte> Bytes(ulong address, int length) => IsExecutable(address, length)
            ? file.ReadLoaded(address, length, executableOnly: true).Span
            : throw new InvalidOperationException($"0x{address:x} is not in a code segment");

        public byte ByteAt(ulong address) => Bytes(address, 1)[0];
    }
}
