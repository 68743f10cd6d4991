using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Live;

/// <summary>Every refusal leaves the target exactly as it was: its code re-read, its mappings unchanged, still running.</summary>
[Collection(ProcessTests.Name)]
public class LivePatchRefusalTests
{
    private static string Payload(string name) => LivePatcherTests.BuildPayload($"live/apply/{name}.c");

    [Fact]
    public void An_unknown_symbol_in_the_payload_is_named()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "2");
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        var error = Assert.Throws<PayloadException>(() => patcher.Apply(Payload("unknown")));

        Assert.Contains("unknown symbol 'no_such_function'", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void An_ambiguous_old_function_lists_its_candidates_and_module_qualified_names_resolve_it()
    {
        using var target = StartWithLib();
        var before = TargetSnapshot.Take(target.Pid);

        using var patcher = LivePatcher.Attach(target.Pid, ProcessTests.Generous);
        var error = Assert.Throws<SymbolResolutionException>(() => patcher.Apply(Payload("ambiguous")));

        Assert.Contains("'compute' is ambiguous", error.Message, StringComparison.Ordinal);
        Assert.Contains("withlib-", error.Message, StringComparison.Ordinal);
        Assert.Contains("libscale.so!compute", error.Message, StringComparison.Ordinal);
        Assert.Equal(2, error.Candidates.Count);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_function_too_short_for_a_jump_is_refused_by_name()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "1");
        using var target = TargetProcess.Open(worker.Pid);
        var before = TargetSnapshot.Take(worker.Pid, target.ResolveSymbol("tiny").Address);

        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        var error = Assert.Throws<LivePatchException>(() => patcher.Apply(Payload("tiny")));

        Assert.Equal(LivePatchRefusal.FunctionTooShort, error.Refusal);
        Assert.Contains("!tiny", error.Message, StringComparison.Ordinal);
        Assert.Contains("too short for a 5-byte jump", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_malformed_payload_is_refused_before_touching_the_target()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "1");
        var truncated = Path.Combine(ExternalTool.ScratchDirectory("malformed"), "broken.o");
        var whole = File.ReadAllBytes(Payload("secret"));
        File.WriteAllBytes(truncated, whole[..(whole.Length / 3)]);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        var error = Assert.Throws<PayloadException>(() => patcher.Apply(truncated));

        Assert.Contains("broken.o", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_pid_that_does_not_exist_is_refused() =>
        Assert.Equal(TargetError.NotFound, Assert.Throws<TargetException>(() => LivePatcher.Attach(int.MaxValue - 3, ProcessTests.Generous)).Error);

    [Fact]
    public void A_payload_applied_twice_is_refused_the_second_time()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "2");
        var fix = LivePatcherTests.BuildPayload("live/apply/fix.c");
        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        patcher.Apply(fix);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        var error = Assert.Throws<LivePatchException>(() => patcher.Apply(fix));

        Assert.Equal(LivePatchRefusal.AlreadyApplied, error.Refusal);
        Assert.Contains("payload 'fix' is already applied", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        Assert.Single(patcher.List());
        worker.AssertValueBecomes("compute", 102);
    }

    [Fact]
    public void A_thread_spinning_inside_the_first_bytes_makes_apply_fail_after_the_timeout_naming_it()
    {
        var spinner = Gcc.FixturePath("targets/spinner.S");
        using var spinning = RunningTarget.Start("targets/spinning.c", $"-O2 -g -pthread {spinner}");
        var entry = spinning.ReadyAddress("spin_entry");
        var spinnerThread = Assert.Single(spinning.OtherThreads());
        var before = TargetSnapshot.Take(spinning.Pid, entry);

        using var patcher = LivePatcher.Attach(spinning.Pid, ProcessTests.Generous);
        var error = Assert.Throws<TargetException>(() => patcher.Apply(Payload("spin")));

        Assert.Equal(TargetError.Timeout, error.Error);
        Assert.Contains($"thread {spinnerThread} stayed inside", error.Message, StringComparison.Ordinal);
        Assert.Contains("spin_entry", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        var tick = spinning.NextValue("tick");
        Assert.True(spinning.NextValue("tick") > tick, "the target still runs");
    }

    [Fact]
    public void Code_changed_by_another_tool_since_apply_is_not_overwritten_by_revert()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "2");
        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        // secret() runs once per 5 ms on the main thread only: the unsynchronized write below (as another tool would
        // make it) practically never meets a thread executing those bytes.
        var applied = Assert.Single(patcher.Apply(LivePatcherTests.BuildPayload("live/apply/secret.c")).Functions);
        using (var other = TargetProcess.Open(worker.Pid))
            other.WriteMemory(applied.PatchAddress, Convert.FromHexString(applied.OriginalBytes)); // reverted by hand, as with gdb
        var before = TargetSnapshot.Take(worker.Pid, applied.PatchAddress);

        var error = Assert.Throws<LivePatch.Poke.TextPokeException>(() => patcher.Revert("secret"));

        Assert.Equal(applied.PatchAddress, error.Address);
        Assert.Contains($"holds {applied.OriginalBytes}, not the expected e9", error.Message, StringComparison.Ordinal);
        Assert.Contains("another tool changed it", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
    }

    [Fact]
    public void A_stop_that_times_out_leaves_every_thread_running_while_still_attached()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "8");
        var fix = LivePatcherTests.BuildPayload("live/apply/fix.c");
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));
        // 1 µs: the deadline passes while the interrupts are still on their way.
        using var patcher = LivePatcher.Attach(worker.Pid, new LivePatchOptions { Timeout = TimeSpan.FromTicks(10) });

        for (var round = 0; round < 5; round++)
        {
            var error = Assert.Throws<TargetException>(() => patcher.Apply(fix));
            Assert.Equal(TargetError.Timeout, error.Error);
        }

        Thread.Sleep(50);
        var stopped = worker.ThreadStates().Where(t => t.Value == "t").Select(t => t.Key).ToList();
        Assert.True(stopped.Count == 0, $"threads left in a tracing stop: {string.Join(", ", stopped)}");
        var calls = worker.NextValue("calls");
        Assert.True(worker.NextValue("calls") > calls, "the workers still run");
        before.AssertUnchanged();
    }

    internal static RunningTarget StartWithLib()
    {
        var directory = ExternalTool.ScratchDirectory("withlib");
        var library = Gcc.Compile("targets/libscale.c", "-O2 -g -shared -fPIC -fcf-protection=full", Path.Combine(directory, "libscale.so"));
        var executable = Gcc.Compile("targets/withlib.c", $"-O2 -g -fcf-protection=full -Wl,--no-as-needed {library} -Wl,-rpath,{directory}", Path.Combine(directory, "withlib-test"));
        return RunningTarget.StartExecutable(executable);
    }
}

/// <summary>A target's code at some addresses and its memory map, to prove an action changed nothing.</summary>
internal sealed class TargetSnapshot
{
    private readonly int _pid;
    private readonly Dictionary<ulong, byte[]> _code;
    private readonly string _maps;

    private TargetSnapshot(int pid, Dictionary<ulong, byte[]> code, string maps)
    {
        _pid = pid;
        _code = code;
        _maps = maps;
    }

    public static TargetSnapshot Take(int pid, params ulong[] addresses)
    {
        using var target = TargetProcess.Open(pid);
        return new TargetSnapshot(pid, addresses.ToDictionary(a => a, a => target.ReadMemory(a, 32)), File.ReadAllText($"/proc/{pid}/maps"));
    }

    public void AssertUnchanged()
    {
        using var target = TargetProcess.Open(_pid);
        foreach (var (address, bytes) in _code)
            Assert.Equal(Convert.ToHexString(bytes), Convert.ToHexString(target.ReadMemory(address, bytes.Length)));
        Assert.Equal(_maps, File.ReadAllText($"/proc/{_pid}/maps"));
        // While a LivePatcher is attached the tracer is this test process; what matters is that nobody else is.
        Assert.Contains(RunningTarget.TracerProcess(_pid), new[] { 0, Environment.ProcessId });
    }
}
