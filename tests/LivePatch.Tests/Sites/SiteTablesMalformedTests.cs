using System.Buffers.Binary;
using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Sites;

/// <summary>
/// Each row corrupts one field of a table in a copy of the linked fixture and expects
/// <see cref="SiteTableException"/> naming the table, the entry and the fault.
/// </summary>
public class SiteTablesMalformedTests
{
    private const string Alt = SiteTables.AlternativesTable;
    private const string Locks = SiteTables.LockPrefixTable;
    private const string Calls = SiteTables.CallSiteTable;
    private const string OpClobbers = SiteTables.OpClobbersTable;
    private const string CallSamples = "callsites-pie";

    /// <summary>A corruption: table, entry index (null: the whole table), what it does to the bytes, a message fragment, and the sample it corrupts.</summary>
    private sealed record Lie(string Table, int? Index, Action<byte[], ElfFile> Corrupt, string Message, string Sample = "sites-pie");

    private static readonly Dictionary<string, Lie> Lies = new()
    {
        ["site offset far past the code"] = new(Alt, 1, (b, f) => Add32(b, f, Alt, 12 + 0, 0x10000000), "outside the executable code"),
        ["site offset before the module"] = new(Alt, 0, (b, f) => Add32(b, f, Alt, 0, -0x10000000), "outside the executable code"),
        ["site in the replacement section"] = new(Alt, 2, (b, f) => PointSiteAtReplacements(b, f, 2), "outside the executable code"),
        ["replacement offset out of its section"] = new(Alt, 2, (b, f) => Add32(b, f, Alt, 24 + 4, 0x100000), $"outside {SiteTables.ReplacementSection}"),
        ["replacement pointing at the site"] = new(Alt, 0, (b, f) => Set32(b, f, Alt, 4, Get32(b, f, Alt, 0) - 4), $"outside {SiteTables.ReplacementSection}"),
        ["replacement longer than the site"] = new(Alt, 1, (b, f) => b[At(f, Alt, 12 + 11)] = (byte)(b[At(f, Alt, 12 + 10)] + 1), "longer than its site"),
        ["site longer than the patch limit"] = new(Alt, 0, (b, f) => b[At(f, Alt, 10)] = 255, "254-byte patch limit"),
        ["unknown feature"] = new(Alt, 2, (b, f) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(At(f, Alt, 24 + 8)), 999), "unknown feature number 999"),
        ["first unassigned feature"] = new(Alt, 0, (b, f) => BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(At(f, Alt, 8)), 31), "unknown feature number 31"),
        ["entries of one site disagreeing on its length"] = new(Alt, 4, (b, f) => b[At(f, Alt, 48 + 10)]++, "is 9 bytes long here but 8 in entry 3: entries of one site must agree on its length"),
        ["a site overlapping another"] = new(Alt, 4, (b, f) => Add32(b, f, Alt, 48, 1), "overlaps the site"),
        ["alternatives size not a multiple of 12"] = new(Alt, null, (b, f) => AddToSectionSize(b, f, Alt, -1), "not a multiple of the 12-byte entry size"),
        ["lock site one byte after the prefix"] = new(Locks, 1, (b, f) => Add32(b, f, Locks, 4, 1), "not the lock prefix 0xf0"),
        ["lock site outside the code"] = new(Locks, 0, (b, f) => Add32(b, f, Locks, 0, 0x10000000), "outside the executable code"),
        ["lock table size not a multiple of 4"] = new(Locks, null, (b, f) => AddToSectionSize(b, f, Locks, -2), "not a multiple of the 4-byte entry size"),
        // Call sites: entries 0-2 come from callsites_asm.S (lean_call, seven_call, twice_tail), linked first.
        ["call site outside the code"] = new(Calls, 0, (b, f) => Add32(b, f, Calls, 0, 0x10000000), "outside the executable code", CallSamples),
        ["call site shorter than the indirect call"] = new(Calls, 1, (b, f) => b[At(f, Calls, 16 + 15)] = 5, "shorter than the 6-byte indirect call", CallSamples),
        ["call site longer than the patch limit"] = new(Calls, 1, (b, f) => b[At(f, Calls, 16 + 15)] = 255, "254-byte patch limit", CallSamples),
        ["call site cut inside its call"] = new(Calls, 2, (b, f) => b[At(f, Calls, 32 + 15)]--, "holds bytes that are not whole instructions", CallSamples),
        ["call site with an instruction before its call"] = new(Calls, 0, (b, f) => { Add32(b, f, Calls, 0, -2); b[At(f, Calls, 15)] += 2; },
            "holds 'push %r11'", CallSamples),
        ["call site calling through another slot"] = new(Calls, 2, (b, f) => Add32(b, f, Calls, 32 + 4, 8), "not its recorded slot", CallSamples),
        ["slot in the code"] = new(Calls, 1, (b, f) => Set32(b, f, Calls, 16 + 4, Get32(b, f, Calls, 16) - 4), "outside the module's data", CallSamples),
        ["call site name outside its section"] = new(Calls, 3, (b, f) => Add32(b, f, Calls, 48 + 8, 0x100000), $"outside {SiteTables.CallSiteNames}", CallSamples),
        ["empty call site name"] = new(Calls, 0, (b, f) => Add32(b, f, Calls, 8, "platform.lean".Length), "the site's name is empty", CallSamples),
        ["rsp in a site's clobbers"] = new(Calls, 1, (b, f) => b[At(f, Calls, 16 + 12)] |= 0x10, "declares rsp clobbered", CallSamples),
        ["two call sites at one place"] = new(Calls, 1, (b, f) => { Set32(b, f, Calls, 16, Get32(b, f, Calls, 0) - 16); Set32(b, f, Calls, 16 + 4, Get32(b, f, Calls, 4) - 16); },
            "overlaps the site", CallSamples),
        ["call-site table size not a multiple of 16"] = new(Calls, null, (b, f) => AddToSectionSize(b, f, Calls, -4), "not a multiple of the 16-byte entry size", CallSamples),
        ["op function outside the code"] = new(OpClobbers, 0, (b, f) => Add32(b, f, OpClobbers, 0, 0x10000000), "outside the executable code", CallSamples),
        ["rsp in an op's clobbers"] = new(OpClobbers, 0, (b, f) => b[At(f, OpClobbers, 4)] |= 0x10, "declared to clobber rsp", CallSamples),
        ["op clobbers reserved field set"] = new(OpClobbers, 0, (b, f) => b[At(f, OpClobbers, 6)] = 1, "reserved field is 0x0001, not 0", CallSamples),
    };

    public static TheoryData<string> Names => [.. Lies.Keys];

    [Theory]
    [MemberData(nameof(Names))]
    public void Corrupt_table_is_refused_naming_table_and_entry(string name)
    {
        var lie = Lies[name];
        var bytes = File.ReadAllBytes(lie.Sample.StartsWith("callsites", StringComparison.Ordinal) ? CallSiteSamples.PathOf(lie.Sample) : SiteSamples.PathOf(lie.Sample));
        lie.Corrupt(bytes, ElfFile.Parse((byte[])bytes.Clone()));

        var error = Assert.Throws<SiteTableException>(() => SiteTables.Read(ElfFile.Parse(bytes)));

        Assert.Equal(lie.Table, error.Table);
        Assert.Equal(lie.Index, error.Index);
        Assert.StartsWith(lie.Index is { } i ? $"{lie.Table} entry {i}: " : $"{lie.Table}: ", error.Message, StringComparison.Ordinal);
        Assert.Contains(lie.Message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unchanged_copy_reads()
    {
        var tables = SiteTables.Read(ElfFile.Parse(File.ReadAllBytes(SiteSamples.PathOf("sites-pie"))));

        Assert.Equal(5, tables.Alternatives.Count);
        Assert.Equal(2, tables.LockPrefixes.Count);
    }

    [Fact]
    public void Relocatable_object_is_refused_for_now()
    {
        var obj = Fixtures.Gcc.Compile(SiteSamples.Source,
            $"-c -std=c11 -O2 -I {Path.Combine(AppContext.BaseDirectory, "include")}", Path.Combine("sites", "sites.o"));

        var error = Assert.Throws<SiteTableException>(() => SiteTables.Read(ElfFile.Load(obj)));

        Assert.Contains("relocatable objects are not supported yet", error.Message, StringComparison.Ordinal);
    }

    private static int At(ElfFile file, string table, int offset) => checked((int)file.FindSection(table)!.Offset + offset);

    private static int Get32(byte[] bytes, ElfFile file, string table, int offset) =>
        BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(At(file, table, offset)));

    private static void Set32(byte[] bytes, ElfFile file, string table, int offset, int value) =>
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(At(file, table, offset)), value);

    private static void Add32(byte[] bytes, ElfFile file, string table, int offset, int delta) =>
        Set32(bytes, file, table, offset, Get32(bytes, file, table, offset) + delta);

    /// <summary>Points entry <paramref name="index"/>'s site at its own replacement (executable, but not code that runs).</summary>
    private static void PointSiteAtReplacements(byte[] bytes, ElfFile file, int index)
    {
        var entry = index * SiteTables.AlternativeEntrySize;
        Set32(bytes, file, Alt, entry, Get32(bytes, file, Alt, entry + 4) + 4);
    }

    /// <summary>Changes <c>sh_size</c> in the section header of <paramref name="table"/>.</summary>
    private static void AddToSectionSize(byte[] bytes, ElfFile file, string table, long delta)
    {
        var headers = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(0x28));
        var field = bytes.AsSpan(checked((int)headers + file.FindSection(table)!.Index * 64 + 32));
        BinaryPrimitives.WriteUInt64LittleEndian(field, (ulong)((long)BinaryPrimitives.ReadUInt64LittleEndian(field) + delta));
    }
}
