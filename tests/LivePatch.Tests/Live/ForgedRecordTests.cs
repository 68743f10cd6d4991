using System.Globalization;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// A record forged in the target's memory (as a buggy or compromised target could write it) is checked against what
/// livepatch sees for itself before revert, unload, recover or list act on it: each forgery below wrote attacker-chosen
/// bytes, unmapped memory or ran a "hook" before; now each is refused naming the check (exit 4), and the target is
/// unchanged and alive.
/// </summary>
[Collection(ProcessTests.Name)]
public class ForgedRecordTests
{
    private static readonly byte[] Forged = [0xde, 0xad, 0xbe, 0xef, 0x00];

    private static string Fix => TestPayloads.Build("live/apply/fix.c");

    public static TheoryData<string, string> Forgeries => new()
    {
        { "data-word", "is not in the executable code of a module" },
        { "libc-text", "are neither libc.so.6's own nor another recorded payload's jump" },
        { "int3s", "are neither" },
        { "jump-elsewhere", "is not the jump to its new code in the payload's own memory" },
        { "hook-at-abort", "its hook give_up at 0x" },
        { "stack-block", "is [stack], not memory livepatch maps" },
        { "module-block", "not memory livepatch maps" },
        { "missing-field", "lacks a field livepatch always writes" },
        { "escape-name", "the name 'fix\\x1b[2J' holds control characters" },
    };

    [Theory]
    [MemberData(nameof(Forgeries))]
    public void A_forged_record_is_refused_naming_the_check_and_the_target_is_unchanged(string forgery, string check)
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var process = AttachedProcess.Attach(worker.Pid);
        using var patcher = new LivePatcher(process, Generous.Options);
        patcher.Apply(Payload.Load(Fix));
        worker.AssertValueBecomes("compute", 102);
        var real = Assert.Single(patcher.List());
        var (forged, watched) = Forge(worker, process, real, forgery);
        var before = watched.Select(a => Read(worker.Pid, a)).ToList();
        var maps = File.ReadAllLines($"/proc/{worker.Pid}/maps");

        var refusals = new List<PatchRefusedException>
        {
            Assert.Throws<PatchRefusedException>(() => patcher.Revert(forged.Name)),
            Assert.Throws<PatchRefusedException>(() => patcher.List()),
        };

        foreach (var refused in refusals)
        {
            Assert.Equal(LivePatchRefusal.RecordInvalid, refused.Refusal);
            Assert.Contains($"process {worker.Pid}: the livepatch record fails a check", refused.Message, StringComparison.Ordinal);
            Assert.Contains(check, refused.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\u001b', refused.Message);
        }
        Assert.Equal(before, watched.Select(a => Read(worker.Pid, a)).ToList());
        // The counter is the target's to change (the fix counts its calls there); the forged bytes never reach it.
        Assert.False(Read(worker.Pid, worker.ReadyAddress("counter")).AsSpan().StartsWith(Forged));
        Assert.Equal(maps, File.ReadAllLines($"/proc/{worker.Pid}/maps"));
        worker.AssertValueBecomes("compute", 102);

        var cli = LivepatchCli.Run("list", worker.Pid.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(4, cli.ExitCode);
        Assert.Single(cli.Error.TrimEnd().Split('\n'));
        Assert.DoesNotContain('\u001b', cli.Error);
        Assert.False(worker.HasExited);
    }

    [Fact]
    public void An_unload_of_memory_that_holds_a_thread_stack_is_refused_inside_the_stop()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var process = AttachedProcess.Attach(worker.Pid);
        using var patcher = new LivePatcher(process, Generous.Options);
        patcher.Apply(Payload.Load(Fix));
        patcher.Revert("fix");
        var real = Assert.Single(patcher.List());
        // A glibc thread stack: an anonymous rw-p mapping right above its ---p guard page.
        var regions = MemoryMap.Read(worker.Pid).Regions;
        var stack = regions.Where((r, i) => i > 0 && r.Path.Length == 0 && r.Protection == (MemoryProtection.Read | MemoryProtection.Write)
            && regions[i - 1].End == r.Start && regions[i - 1].Protection == MemoryProtection.None && regions[i - 1].Path.Length == 0).First();
        RecordStore.Write(process, [real with { Memory = [.. real.Memory, new MappedBlock(stack.Start, stack.Size, "data")] }]);
        var maps = File.ReadAllLines($"/proc/{worker.Pid}/maps");

        var refused = Assert.Throws<PatchRefusedException>(() => patcher.Unload("fix"));

        Assert.Equal(LivePatchRefusal.RecordInvalid, refused.Refusal);
        Assert.Contains("names memory holding the stack of thread", refused.Message, StringComparison.Ordinal);
        Assert.Equal(maps, File.ReadAllLines($"/proc/{worker.Pid}/maps"));
        var calls = worker.NextValue("calls");
        Assert.True(worker.NextValue("calls") > calls, "the workers still run");
    }

    [Fact]
    public void A_forged_interrupted_action_is_not_recovered()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var process = AttachedProcess.Attach(worker.Pid);
        using var patcher = new LivePatcher(process, Generous.Options);
        patcher.Apply(Payload.Load(Fix));
        var real = Assert.Single(patcher.List());
        var counter = worker.ReadyAddress("counter");
        var intent = new PendingAction(PendingActionKind.Revert, ["fix"], 1, DateTimeOffset.UtcNow,
            [new PendingSite("worker!counter", counter, Forged, Read(worker.Pid, counter)[..5], 5, 5)], [real]);
        RecordStore.Write(process, new TargetRecord([real], intent));

        var refused = Assert.Throws<PatchRefusedException>(patcher.Recover);

        Assert.Equal(LivePatchRefusal.RecordInvalid, refused.Refusal);
        Assert.Contains($"site worker!counter at 0x{counter:x}: 0x{counter:x} is not in the executable code of a module", refused.Message, StringComparison.Ordinal);
        Assert.False(Read(worker.Pid, counter).AsSpan().StartsWith(Forged));
        worker.AssertValueBecomes("compute", 102);
    }

    // Writes the forged record as the target could, and returns it with the addresses whose bytes must not change.
    private static (AppliedPayloadInfo Forged, ulong[] Watched) Forge(RunningTarget worker, AttachedProcess process, AppliedPayloadInfo real, string forgery)
    {
        var function = real.Functions[0];
        using var target = TargetProcess.Open(worker.Pid);
        AppliedFunctionInfo At(string name, ulong address, byte[] restore) =>
            function with { Name = name, OldAddress = address, PatchAddress = address, OriginalBytes = restore, PatchBytes = target.ReadMemory(address, 5), DisplacedBytes = null, Trampoline = 0 };
        var getpid = target.ResolveSymbol("libc.so.6!getpid").Address;
        var helper = worker.ReadyAddress("helper");
        var counter = worker.ReadyAddress("counter");
        var forged = forgery switch
        {
            "data-word" => real with { Functions = [At("worker!counter", counter, Forged)] },
            "libc-text" => real with { Functions = [At("libc.so.6!getpid", getpid, [0xcc, 0xcc, 0xcc, 0xcc, 0xcc])] },
            "int3s" => real with { Functions = [At($"{target.MainModule.Name}!helper", helper, [0xcc, 0xcc, 0xcc, 0xcc, 0xcc])] },
            "jump-elsewhere" => real with { Functions = [function with { NewAddress = getpid, PatchBytes = Jump(function.PatchAddress, getpid) }] },
            "hook-at-abort" => real with { Hooks = [new AppliedHookInfo(PayloadHookKind.PreRevert, "give_up", target.ResolveSymbol("libc.so.6!abort").Address)] },
            "stack-block" => real with { Memory = [.. real.Memory, Block(target, "[stack]")] },
            "module-block" => real with { Memory = [.. real.Memory, Block(target, "libc.so.6")] },
            "missing-field" => real with { Functions = null! },
            "escape-name" => real with { Name = "fix\u001b[2J" },
            _ => throw new ArgumentException(forgery, nameof(forgery)),
        };
        RecordStore.Write(process, [forged]);
        return (forged with { Name = forgery == "escape-name" ? "fix\u001b[2J" : "fix" }, [function.PatchAddress, getpid, helper]);
    }

    private static MappedBlock Block(TargetProcess target, string path)
    {
        var region = target.ReadMemoryMap().Regions.First(r => r.Path == path || Path.GetFileName(r.Path) == path);
        return new MappedBlock(region.Start, region.Size, "data");
    }

    private static byte[] Jump(ulong from, ulong to)
    {
        var bytes = new byte[5];
        bytes[0] = 0xe9;
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(1), (int)(long)(to - from - 5));
        return bytes;
    }

    private static byte[] Read(int pid, ulong address)
    {
        using var target = TargetProcess.Open(pid);
        return target.ReadMemory(address, 8);
    }
}
