using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Live;

/// <summary>
/// The record kept in the target (docs/record.md): two slots and a header naming one with its checksum, so a write cut
/// short leaves the previous record whole and a damaged one is refused, never misread; version-1 records still read.
/// </summary>
[Collection(ProcessTests.Name)]
public class TargetRecordTests
{
    private static readonly JsonSerializerOptions Version1Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    private static string Fix => TestPayloads.Build("live/apply/fix.c");

    // Writes alternate between the slots, the first (sequence 1) in slot A.
    private static uint SlotOf(ulong sequence) => (uint)(sequence % 2 == 1 ? RecordStore.SlotA : RecordStore.SlotB);

    private static string Plus200 => TestPayloads.Build("live/lifecycle/plus200.c");

    [Fact]
    public void Each_write_goes_to_the_other_slot_and_only_the_header_switches_to_it()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Load(Fix);
        using var target = TargetProcess.Open(worker.Pid);
        var start = RecordStart(target);
        var first = Header.Read(target, start);
        Assert.Equal((2u, SlotOf(first.Sequence)), (first.Version, first.Offset));

        // A writer killed while writing the next JSON leaves it half written in the other slot; the header still names the first.
        target.WriteMemory(start + RecordStore.SlotB, Encoding.UTF8.GetBytes("{\"payloads\":[{\"name\":\"torn"));

        Assert.Equal(["fix"], LivePatcher.List(worker.Pid).Select(p => p.Name));
        patcher.Load(Plus200);
        var second = Header.Read(target, start);
        // A load writes more than once (its memory is recorded as it is mapped): each write took the other slot.
        Assert.True(second.Sequence > first.Sequence);
        Assert.Equal(SlotOf(second.Sequence), second.Offset);
        Assert.Equal(["fix", "plus200"], LivePatcher.List(worker.Pid).Select(p => p.Name));
    }

    [Fact]
    public void A_json_that_does_not_match_its_checksum_is_refused_not_misread()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Load(Fix);
        using var target = TargetProcess.Open(worker.Pid);
        var start = RecordStart(target);
        var header = Header.Read(target, start);
        // "loaded" becomes "Loaded": still valid JSON, a state this version would misread silently without the checksum.
        var body = target.ReadMemory(start + header.Offset, (int)header.Length);
        var at = Encoding.UTF8.GetString(body).IndexOf("\"loaded\"", StringComparison.Ordinal) + 1;
        target.WriteMemory(start + header.Offset + (ulong)at, "L"u8);

        var error = Assert.Throws<PatchRefusedException>(() => LivePatcher.List(worker.Pid));

        Assert.Equal(LivePatchRefusal.StateUnreadable, error.Refusal);
        Assert.Contains("does not match the checksum in its header", error.Message, StringComparison.Ordinal);
        Assert.Equal(LivePatchRefusal.StateUnreadable, Assert.Throws<PatchRefusedException>(() => patcher.Apply(Fix)).Refusal);
    }

    [Fact]
    public void A_version_1_record_is_read_and_the_next_write_makes_it_version_2_keeping_its_payloads()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Load(Fix);
        using var target = TargetProcess.Open(worker.Pid);
        var start = RecordStart(target);
        // What livepatch before crash safety wrote: a 32-byte header (version 1), then the JSON array of payloads.
        var array = JsonSerializer.SerializeToUtf8Bytes(LivePatcher.List(worker.Pid), Version1Json);
        var old = new byte[32 + array.Length];
        "LIVEPATCH-STATE\0"u8.CopyTo(old);
        BinaryPrimitives.WriteUInt32LittleEndian(old.AsSpan(16), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(old.AsSpan(20), (uint)array.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(old.AsSpan(24), 7);
        array.CopyTo(old, 32);
        target.WriteMemory(start, old);

        Assert.Equal(PayloadState.Loaded, Assert.Single(LivePatcher.List(worker.Pid)).State);
        patcher.Load(Plus200);

        var header = Header.Read(target, start);
        Assert.Equal(2u, header.Version);
        Assert.True(header.Sequence > 7, $"sequence {header.Sequence} goes on from the version-1 record's 7");
        Assert.Equal(SlotOf(header.Sequence), header.Offset);
        patcher.ApplyLoaded("fix");
        Assert.Equal(["plus200:loaded", "fix:applied"], LivePatcher.List(worker.Pid).Select(p => $"{p.Name}:{p.State.ToString().ToLowerInvariant()}"));
        worker.AssertValueBecomes("compute", 102);
    }

    [Fact]
    public void A_record_created_by_a_run_that_died_before_writing_it_reads_as_empty()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Load(Fix);
        using var target = TargetProcess.Open(worker.Pid);
        target.WriteMemory(RecordStart(target), new byte[48]);

        Assert.Empty(LivePatcher.List(worker.Pid));
        Assert.Null(LivePatcher.Interrupted(worker.Pid));
    }

    private static ulong RecordStart(TargetProcess target) =>
        target.ReadMemoryMap().Regions.Single(r => r.Path.StartsWith("/memfd:" + RecordStore.MappingName, StringComparison.Ordinal)).Start;

    private readonly record struct Header(uint Version, uint Length, ulong Sequence, ulong Offset)
    {
        public static Header Read(TargetProcess target, ulong start)
        {
            var bytes = target.ReadMemory(start, 48);
            Assert.Equal("LIVEPATCH-STATE\0", Encoding.ASCII.GetString(bytes, 0, 16));
            return new(BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(16)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(20)),
                BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(24)), BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(32)));
        }
    }
}
