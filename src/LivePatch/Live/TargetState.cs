using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// The record of what is applied, kept in the target itself: a shared memory file (<c>memfd</c>) named
/// <c>livepatch-state</c>, mapped into the process. Any later livepatch run finds it in <c>/proc/PID/maps</c>;
/// it vanishes with the process. Layout: 16-byte magic, u32 format version, u32 length, u64 sequence,
/// then <c>length</c> bytes of UTF-8 JSON (docs/state.md).
/// </summary>
internal static class TargetState
{
    public const string MappingName = "livepatch-state";
    public const ulong Capacity = 1 << 20;
    private const int HeaderSize = 32;
    private const uint FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "LIVEPATCH-STATE\0"u8;

    private const long SysClose = 3;
    private const long SysMmap = 9;
    private const long SysMunmap = 11;
    private const long SysFtruncate = 77;
    private const long SysMemfdCreate = 319;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        WriteIndented = false,
    };

    /// <summary>The payloads recorded in <paramref name="target"/>, oldest first; empty when nothing was ever applied.</summary>
    public static List<AppliedPayloadInfo> Read(TargetProcess target)
    {
        var region = Find(target);
        if (region is null)
            return [];
        var header = target.ReadMemory(region.Value.Start, HeaderSize);
        if (!header.AsSpan(0, 16).SequenceEqual(Magic))
            throw Unreadable(target, "its header has no magic");
        var version = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(16));
        if (version != FormatVersion)
            throw Unreadable(target, $"it has format version {version}; this livepatch reads version {FormatVersion}");
        var length = BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(20));
        if (length == 0)
            return [];
        if (length > Capacity - HeaderSize)
            throw Unreadable(target, $"its length {length} is larger than the record");
        var body = target.ReadMemory(region.Value.Start + HeaderSize, (int)length);
        try
        {
            return JsonSerializer.Deserialize<List<AppliedPayloadInfo>>(body, Json) ?? [];
        }
        catch (JsonException error)
        {
            throw Unreadable(target, error.Message);
        }
    }

    /// <summary>Replaces the record with <paramref name="payloads"/>, creating it on first use (which needs a stopped thread).</summary>
    public static void Write(PtraceSession session, TargetProcess target, IReadOnlyList<AppliedPayloadInfo> payloads)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(payloads, Json);
        if ((ulong)body.Length > Capacity - HeaderSize)
            throw new LivePatchException(LivePatchRefusal.StateUnreadable, $"process {target.Pid}: the record of applied payloads would exceed {Capacity} bytes");
        var start = Find(target)?.Start ?? Create(session, target);
        var previous = target.ReadMemory(start, HeaderSize);
        var sequence = previous.AsSpan(0, 16).SequenceEqual(Magic) ? BinaryPrimitives.ReadUInt64LittleEndian(previous.AsSpan(24)) + 1 : 1;
        var header = new byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(20), (uint)body.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(24), sequence);
        // Body first, header last: a reader sees the old length with a prefix of new bytes at worst, and retries.
        target.WriteMemory(start + HeaderSize, body);
        target.WriteMemory(start, header);
    }

    private static MemoryRegion? Find(TargetProcess target)
    {
        foreach (var region in target.ReadMemoryMap().Regions)
            if (region.Path.StartsWith("/memfd:" + MappingName, StringComparison.Ordinal))
                return region;
        return null;
    }

    // memfd_create, ftruncate, mmap(MAP_SHARED), close: the mapping keeps the file alive and named in the maps.
    private static ulong Create(PtraceSession session, TargetProcess target) => session.OnTracer(() =>
    {
        var tid = session.StopOne(System.Diagnostics.Stopwatch.GetTimestamp() + System.Diagnostics.Stopwatch.Frequency);
        try
        {
            var scratch = Check(session, target, "mmap", session.Syscall(tid, SysMmap, 0, 4096, 3, 0x22, -1, 0));
            try
            {
                target.WriteMemory((ulong)scratch, Encoding.ASCII.GetBytes(MappingName + "\0"));
                var fd = Check(session, target, "memfd_create", session.Syscall(tid, SysMemfdCreate, scratch, 1));
                try
                {
                    Check(session, target, "ftruncate", session.Syscall(tid, SysFtruncate, fd, (long)Capacity));
                    return (ulong)Check(session, target, "mmap", session.Syscall(tid, SysMmap, 0, (long)Capacity, 3, 0x01, fd, 0));
                }
                finally
                {
                    session.Syscall(tid, SysClose, fd);
                }
            }
            finally
            {
                session.Syscall(tid, SysMunmap, scratch, 4096);
            }
        }
        finally
        {
            session.ResumeAll();
        }
    });

    private static long Check(PtraceSession session, TargetProcess target, string call, long result) =>
        result is < 0 and > -4096
            ? throw new TargetException(TargetError.SystemCallFailed, target.Pid, $"process {target.Pid}: {call} for the livepatch record failed with errno {-result}")
            : result;

    private static LivePatchException Unreadable(TargetProcess target, string why) =>
        new(LivePatchRefusal.StateUnreadable, $"process {target.Pid}: the livepatch record (/memfd:{MappingName}) cannot be read: {why}");
}
