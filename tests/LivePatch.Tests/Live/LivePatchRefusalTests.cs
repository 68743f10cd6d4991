using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;
using LivePatch.Payloads;

namespace LivePatch.Tests.Live;

/// <summary>Every refusal leaves the target exactly as it was: its code re-read, its mappings unchanged, still running.</summary>
[Collection(ProcessTests.Name)]
public class LivePatchRefusalTests
{
    private static string Payload(string name) => TestPayloads.Build($"live/apply/{name}.c");

    [Fact]
    public void An_unknown_symbol_in_the_payload_is_named()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var error = Assert.Throws<PayloadException>(() => patcher.Apply(Payload("unknown")));

        Assert.Contains("unknown symbol 'no_such_function'", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void An_ambiguous_old_function_lists_its_candidates_and_module_qualified_names_resolve_it()
    {
        using var target = TestTargets.StartWithLib();
        var before = TargetSnapshot.Take(target.Pid);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
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
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var target = TargetProcess.Open(worker.Pid);
        var before = TargetSnapshot.Take(worker.Pid, target.ResolveSymbol("tiny").Address);

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Payload("tiny")));

        Assert.Equal(LivePatchRefusal.FunctionTooShort, error.Refusal);
        Assert.Contains("!tiny", error.Message, StringComparison.Ordinal);
        Assert.Contains("too short for a 5-byte jump", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_malformed_payload_is_refused_before_touching_the_target()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var truncated = Path.Combine(ExternalTool.ScratchDirectory("malformed"), "broken.o");
        var whole = File.ReadAllBytes(Payload("secret"));
        File.WriteAllBytes(truncated, whole[..(whole.Length / 3)]);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var error = Assert.Throws<PayloadException>(() => patcher.Apply(truncated));

        Assert.Contains("broken.o", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_pid_that_does_not_exist_is_refused() =>
        Assert.Equal(TargetError.NotFound, Assert.Throws<TargetException>(() => LivePatcher.Attach(int.MaxValue - 3, Generous.Options)).Error);

    [Fact]
    public void A_payload_applied_twice_is_refused_the_second_time()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var fix = TestPayloads.Build("live/apply/fix.c");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(fix);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(fix));

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

        using var patcher = LivePatcher.Attach(spinning.Pid, Generous.Options);
        var error = Assert.Throws<TargetException>(() => patcher.Apply(Payload("spin")));

        Assert.Equal(TargetError.Timeout, error.Error);
        // Its loop branches back into the first bytes: no thread may be anywhere in it, a stronger rule than "not
        // inside the bytes replaced", which it breaks too.
        Assert.Contains($"thread {spinnerThread} is running", error.Message, StringComparison.Ordinal);
        Assert.Contains("spin_entry", error.Message, StringComparison.Ordinal);
        Assert.Contains("its code branches back into the bytes the jump replaces (jmp at +0x4 to +0x2)", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        var tick = spinning.NextValue("tick");
        Assert.True(spinning.NextValue("tick") > tick, "the target still runs");
    }

    [Fact]
    public void Code_changed_by_another_tool_since_apply_is_not_overwritten_by_revert()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        // secret() runs once per 5 ms on the main thread only: the unsynchronized write below (as another tool would
        // make it) practically never meets a thread executing those bytes.
        var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/apply/secret.c")).Functions);
        using (var other = TargetProcess.Open(worker.Pid))
            other.WriteMemory(applied.PatchAddress, applied.OriginalBytes); // reverted by hand, as with gdb
        var before = TargetSnapshot.Take(worker.Pid, applied.PatchAddress);

        var error = Assert.Throws<LivePatch.Poke.TextPokeException>(() => patcher.Revert("secret"));

        Assert.Equal(applied.PatchAddress, error.Address);
        Assert.Contains($"holds {Convert.ToHexStringLower(applied.OriginalBytes)}, not the expected e9", error.Message, StringComparison.Ordinal);
        Assert.Contains("another tool changed it", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
    }

    [Fact]
    public void A_stop_that_times_out_leaves_every_thread_running_while_still_attached()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "8");
        var fix = TestPayloads.Build("live/apply/fix.c");
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
}
