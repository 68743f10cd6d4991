using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>The record as read: the payloads, oldest first, and the intent of an action not finished, if any.</summary>
internal sealed record TargetRecord(List<AppliedPayloadInfo> Payloads, PendingAction? Intent);

/// <summary>
/// The record of what is applied, kept in the target itself: a shared memory file (<c>memfd</c>) named
/// <c>livepatch-state</c>, mapped into the process. Any later livepatch run finds it in <c>/proc/PID/maps</c>;
/// it vanishes with the process. A 48-byte header on the first page names which of two slots holds the current
/// JSON, its length and its SHA-256; a write fills the other slot, then rewrites the header, so a writer that
/// dies leaves the previous record whole (docs/record.md).
/// </summary>
internal static class RecordStore
{
    public const string MappingName = "livepatch-state";
    public const ulong Capacity = 1 << 20;
    private const int HeaderSize = 48;
    private const int Version1HeaderSize = 32;
    private const uint FormatVersion = 2;
    private const int HashLength = 8;

    /// <summary>The two places the JSON alternates between, after the header's page.</summary>
    internal const ulong SlotA = 4096;
    internal const ulong SlotSize = (Capacity - SlotA) / 2;
    internal const ulong SlotB = SlotA + SlotSize;

    private static ReadOnlySpan<byte> Magic => "LIVEPATCH-STATE\0"u8;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        WriteIndented = false,
    };

    /// <summary>The JSON root of format version 2.</summary>
    private sealed record Body(List<AppliedPayloadInfo>? Payloads, PendingAction? Intent);

    /// <summary>
    /// The payloads recorded in <paramref name="target"/>, oldest first, for an action about to change them: refused
    /// while an earlier action's intent is pending (its livepatch run died; run recover first).
    /// </summary>
    public static List<AppliedPayloadInfo> Read(TargetProcess target)
    {
        var record = ReadRecord(target);
        if (record.Intent is { } intent)
            throw new PatchRefusedException(LivePatchRefusal.Interrupted,
                $"process {target.Pid}: the {intent.Describe()} was interrupted (livepatch process {intent.Livepatch} ended before finishing it, {intent.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC): run livepatch recover {target.Pid} first");
        return record.Payloads;
    }

    /// <summary>The record as it is: payloads and pending intent; empty when nothing was ever recorded.</summary>
    public static TargetRecord ReadRecord(TargetProcess target)
    {
        var region = Find(target);
        if (region is null)
            return new([], null);
        // Only a livepatch run that holds the process writes, and its header write is one write in one page: a
        // checksum mismatch means this reader met a write in flight (list runs without ptrace). Read again.
        for (var attempt = 1; ; attempt++)
        {
            var record = ReadOnce(target, region.Value.Start, out var torn);
            if (record is not null)
            {
                RecordCheck.Verify(target, record);
                return record;
            }
            if (attempt == 50)
                throw Unreadable(target, torn!);
            Thread.Sleep(2);
        }
    }

    // Null (with why) when the body does not match the header's checksum.
    private static TargetRecord? ReadOnce(TargetProcess target, ulong start, out string? torn)
    {
        torn = null;
        var header = target.ReadMemory(start, HeaderSize);
        if (!header.AsSpan(0, 16).SequenceEqual(Magic))
            return header.AsSpan(0, 16).IndexOfAnyExcept((byte)0) < 0
                ? new([], null) // created by a run that died before its first write
                : throw Unreadable(target, "its header has no magic");
        var version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(16));
        var length = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(20));
        if (version == 1)
            return ReadVersion1(target, start, length);
        if (version != FormatVersion)
            throw Unreadable(target, $"it has format version {version}; this livepatch reads versions 1 and {FormatVersion}");
        var offset = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(32));
        if (offset != SlotA && offset != SlotB)
        {
            torn = $"its header names offset 0x{offset:x}, which is no slot";
            return null;
        }
        if (length == 0 || length > SlotSize)
        {
            torn = $"its length {length} does not fit a slot";
            return null;
        }
        var body = target.ReadMemory(start + offset, (int)length);
        if (!SHA256.HashData(body).AsSpan(0, HashLength).SequenceEqual(header.AsSpan(40, HashLength)))
        {
            torn = $"the JSON at offset 0x{offset:x} does not match the checksum in its header";
            return null;
        }
        try
        {
            return Deserialize(body);
        }
        catch (Exception error) when (error is JsonException or FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            throw Unreadable(target, error.Message);
        }
    }

    // Version 1 (livepatch before crash safety): the JSON array of payloads right after a 32-byte header.
    private static TargetRecord ReadVersion1(TargetProcess target, ulong start, uint length)
    {
        if (length == 0)
            return new([], null);
        if (length > Capacity - Version1HeaderSize)
            throw Unreadable(target, $"its length {length} is larger than the record");
        var body = target.ReadMemory(start + Version1HeaderSize, (int)length);
        try
        {
            return new(JsonSerializer.Deserialize<List<AppliedPayloadInfo>>(body, Json) ?? [], null);
        }
        catch (Exception error) when (error is JsonException or FormatException or ArgumentException or InvalidOperationException or OverflowException)
        {
            throw Unreadable(target, error.Message);
        }
    }

    /// <summary>Replaces the record with <paramref name="payloads"/> and no pending intent, creating it on first use (which needs a stopped thread).</summary>
    public static void Write(AttachedProcess process, IReadOnlyList<AppliedPayloadInfo> payloads) =>
        Write(process, new TargetRecord([.. payloads], null));

    /// <summary>
    /// Replaces the record with <paramref name="record"/> in one step a crash cannot cut: the JSON goes to the slot
    /// the header does not name, then the header (one write inside one page) is rewritten to name it.
    /// </summary>
    public static void Write(AttachedProcess process, TargetRecord record)
    {
        var target = process.Process;
        var body = Serialize(record);
        if ((ulong)body.Length > SlotSize)
            throw new PatchRefusedException(LivePatchRefusal.StateUnreadable, $"process {target.Pid}: the livepatch record would exceed {SlotSize} bytes");
        var start = Find(target)?.Start ?? process.CreateSharedMemory(MappingName, Capacity);
        var previous = target.ReadMemory(start, HeaderSize);
        var slot = SlotA;
        ulong sequence = 1;
        if (previous.AsSpan(0, 16).SequenceEqual(Magic))
        {
            sequence = BinaryPrimitives.ReadUInt64LittleEndian(previous.AsSpan(24)) + 1;
            var version = BinaryPrimitives.ReadUInt32LittleEndian(previous.AsSpan(16));
            if (version == 1)
            {
                // The version-1 JSON starts at byte 32 and must stay whole until the header names the new one.
                var end = Version1HeaderSize + (ulong)BinaryPrimitives.ReadUInt32LittleEndian(previous.AsSpan(20));
                if (end > SlotB)
                    throw new PatchRefusedException(LivePatchRefusal.StateUnreadable, $"process {target.Pid}: the version-1 livepatch record is too large ({end} bytes) to be rewritten as version {FormatVersion}");
                slot = SlotB;
            }
            else
            {
                slot = BinaryPrimitives.ReadUInt32LittleEndian(previous.AsSpan(32)) == SlotA ? SlotB : SlotA;
            }
        }
        var header = new byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), (uint)body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(24), sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(32), (uint)slot);
        SHA256.HashData(body).AsSpan(0, HashLength).CopyTo(header.AsSpan(40));
        target.WriteMemory(start + slot, body);
        // The commit: /proc/PID/mem copies a write inside one page in one go, so a writer killed now leaves the old
        // header or the new one, never a mix.
        target.WriteMemory(start, header);
    }

    /// <summary>The JSON body of format version 2 for <paramref name="record"/>, as docs/record.md gives it.</summary>
    internal static byte[] Serialize(TargetRecord record) => JsonSerializer.SerializeToUtf8Bytes(new Body(record.Payloads, record.Intent), Json);

    /// <summary>A record from the JSON body of format version 2.</summary>
    /// <exception cref="JsonException">It is not such a body.</exception>
    internal static TargetRecord Deserialize(ReadOnlySpan<byte> json)
    {
        var parsed = JsonSerializer.Deserialize<Body>(json, Json) ?? throw new JsonException("the JSON is null");
        return new(parsed.Payloads ?? [], parsed.Intent);
    }

    /// <summary>True when the target has a record (mapped), written or not.</summary>
    public static bool Exists(TargetProcess target) => Find(target) is not null;

    /// <summary>
    /// Unmaps the record (which frees it: its file has no other reference), for an action that created it and then
    /// changed nothing: the target is left with the mappings it had. Needs a stopped thread.
    /// </summary>
    public static void Remove(AttachedProcess process)
    {
        if (Find(process.Process) is { } region)
            process.Unmap(region.Start, region.Size);
    }

    private static MemoryRegion? Find(TargetProcess target)
    {
        foreach (var region in target.ReadMemoryMap().Regions)
            if (region.Path.StartsWith("/memfd:" + MappingName, StringComparison.Ordinal))
                return region;
        return null;
    }

    private static PatchRefusedException Unreadable(TargetProcess target, string why) =>
        new(LivePatchRefusal.StateUnreadable, $"process {target.Pid}: the livepatch record (/memfd:{MappingName}) cannot be read: {why}");
}
