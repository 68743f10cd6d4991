using System.Globalization;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;
using LivePatch.Payloads;

namespace LivePatch.Tests.Live;

/// <summary>
/// Payload hooks on running processes (fixtures in tests/fixtures/live/hooks/): each runs once at its step, in the
/// target, on a hijacked thread while the others run; a pre hook vetoes; a hook that hangs or crashes is abandoned
/// with a clear error and the target running.
/// </summary>
[Collection(ProcessTests.Name)]
public class HookTests
{
    private static string Build(string name) => TestPayloads.Build($"live/hooks/{name}.c");

    private static RunningTarget StartWorker() => RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");

    private static byte[] Code(int pid, ulong address)
    {
        using var target = TargetProcess.Open(pid);
        return target.ReadMemory(address, 16);
    }

    [Fact]
    public void A_vetoing_pre_apply_hook_refuses_apply_with_its_code_redirects_nothing_and_frees_the_payload()
    {
        using var worker = StartWorker();
        worker.AssertValueBecomes("compute", 3);
        var compute = worker.ReadyAddress("compute");
        var code = Code(worker.Pid, compute);
        var maps = File.ReadAllLines($"/proc/{worker.Pid}/maps");

        using (var patcher = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("veto")));

            Assert.Equal(LivePatchRefusal.VetoedByHook, error.Refusal);
            Assert.Contains("payload 'veto': its pre-apply hook refuse", error.Message, StringComparison.Ordinal);
            Assert.Contains("returned 3: apply refused, nothing was redirected", error.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
        }

        Assert.Equal(code, Code(worker.Pid, compute));
        Assert.Equal(maps, File.ReadAllLines($"/proc/{worker.Pid}/maps"));
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void Each_hook_runs_once_at_its_step_and_a_pre_revert_veto_keeps_the_payload_applied()
    {
        using var worker = StartWorker();
        worker.AssertValueBecomes("counter", 0);

        using (var patcher = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            patcher.Apply(Build("steps"));

            worker.AssertValueBecomes("counter", 1001); // pre-apply set 1000, post-apply added 1
            worker.AssertValueBecomes("compute", 102);
            var recorded = Assert.Single(patcher.List()).Hooks;
            Assert.Equal(["before_apply", "after_apply", "before_revert", "after_revert"], recorded.OrderBy(h => h.Kind).Select(h => h.Symbol));

            var veto = Assert.Throws<PatchRefusedException>(() => patcher.Revert("steps"));

            Assert.Equal(LivePatchRefusal.VetoedByHook, veto.Refusal);
            Assert.Contains("its pre-revert hook before_revert", veto.Message, StringComparison.Ordinal);
            Assert.Contains("returned 7: revert refused, the payload stays applied", veto.Message, StringComparison.Ordinal);
            Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
            worker.AssertValueBecomes("compute", 102);
        }

        // A later livepatch run finds the hooks in the record.
        using (var later = LivePatcher.Attach(worker.Pid, Generous.Options))
            later.Revert("steps");

        worker.AssertValueBecomes("counter", 1111); // pre-revert added 10, post-revert 100
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void Load_runs_no_hook_and_applying_the_loaded_payload_by_name_runs_its_recorded_ones()
    {
        using var worker = StartWorker();
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        patcher.Load(Build("steps"));
        worker.AssertValueBecomes("counter", 0);
        patcher.ApplyLoaded("steps");

        worker.AssertValueBecomes("counter", 1001);
        Assert.Equal([PayloadHookKind.PreApply, PayloadHookKind.PostApply, PayloadHookKind.PreRevert, PayloadHookKind.PostRevert],
            Assert.Single(patcher.List()).Hooks.Select(h => h.Kind));
    }

    [Fact]
    public void Replace_runs_the_revert_hooks_of_the_payload_it_reverts_whose_veto_refuses_it_and_the_new_one_calls_its_original()
    {
        using var worker = StartWorker();
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(Build("steps"));
        worker.AssertValueBecomes("counter", 1001);
        var wrap = Payload.Load(TestPayloads.Build("live/originals/wrap.c"));

        var veto = Assert.Throws<PatchRefusedException>(() => patcher.Replace(wrap));

        Assert.Equal(LivePatchRefusal.VetoedByHook, veto.Refusal);
        Assert.Contains("payload 'steps': its pre-revert hook before_revert", veto.Message, StringComparison.Ordinal);
        Assert.Equal(["steps"], patcher.List().Select(p => p.Name));
        worker.AssertValueBecomes("compute", 102);

        patcher.Replace(wrap);

        worker.AssertValueBecomes("compute", 50); // the original compute, wrapped
        // steps' pre-revert (+10) and post-revert (+100) hooks ran; wrap logs every call on top of that.
        var counter = worker.NextValue("counter");
        Assert.True(counter > 1111, $"counter {counter}");
        Assert.Equal([("steps", PayloadState.Reverted), ("wrap", PayloadState.Applied)], patcher.List().Select(p => (p.Name, p.State)));
    }

    [Theory]
    [InlineData("read")]
    [InlineData("sleep")]
    public void Hooks_run_on_a_thread_parked_in_a_system_call_which_then_goes_on_as_before(string mode)
    {
        using var target = TestTargets.StartCalls(mode);
        target.AssertValueBecomes("value", 7);
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);

        patcher.Apply(Build("parked"));
        target.AssertValueBecomes("hooked", 12);
        target.AssertValueBecomes("value", 8);
        patcher.Revert("parked");

        target.AssertValueBecomes("hooked", 1234);
        target.AssertValueBecomes("value", 7);
        // read() kept every byte in order and nanosleep() slept its whole 20 ms each time.
        target.AssertValueBecomes("errors", 0);
    }

    // The hook runs on the main thread; hooked is 1 while it runs (700 ms) and 2 once it is about to return.
    [Theory]
    [InlineData("redzone")]
    [InlineData("read")]
    [InlineData("sleep")]
    public void Killing_livepatch_while_a_hook_runs_lets_the_thread_finish_it_and_put_itself_back(string mode)
    {
        using var target = TestTargets.StartCalls(mode);
        target.AssertValueBecomes("redzone_errors", 0);
        ulong hooked;
        using (var process = TargetProcess.Open(target.Pid))
            hooked = process.ResolveSymbol("hooked").Address;

        using (var livepatch = LivepatchCli.Start("apply", target.Pid.ToString(CultureInfo.InvariantCulture), Build("slow"), "--timeout", "2000"))
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (HookedValue(target.Pid, hooked) != 1)
            {
                Assert.True(DateTime.UtcNow < deadline, "the hook never started");
                Thread.Sleep(5);
            }
            livepatch.Kill();
            livepatch.WaitForExit(10_000);
        }

        target.AssertValueBecomes("hooked", 2);
        Assert.Equal(0, RunningTarget.TracerProcess(target.Pid));
        target.AssertValueBecomes("value", 7); // nothing was redirected
        // The thread put back its registers, vector state and parked system call by itself.
        target.AssertValueBecomes("errors", 0);
        target.AssertValueBecomes("redzone_errors", 0);
        var n = target.NextValue("n");
        Assert.True(target.NextValue("n") > n, "the target runs on");
    }

    private static int HookedValue(int pid, ulong address)
    {
        using var process = TargetProcess.Open(pid);
        return BitConverter.ToInt32(process.ReadMemory(address, 4));
    }

    [Fact]
    public void A_pre_apply_hook_that_never_returns_times_out_with_nothing_redirected_and_the_target_running()
    {
        using var worker = StartWorker();
        var compute = worker.ReadyAddress("compute");
        var code = Code(worker.Pid, compute);
        var maps = File.ReadAllLines($"/proc/{worker.Pid}/maps");
        var options = new LivePatchOptions { Timeout = Generous.Options.Timeout, HookTimeout = TimeSpan.FromMilliseconds(200) };

        using (var patcher = LivePatcher.Attach(worker.Pid, options))
        {
            var error = Assert.Throws<TargetException>(() => patcher.Apply(Build("endless")));

            Assert.Equal(TargetError.Timeout, error.Error);
            Assert.Contains("payload 'endless': its pre-apply hook endless", error.Message, StringComparison.Ordinal);
            Assert.Contains("did not return within 200 ms: it was abandoned and the thread put back where it was", error.Message, StringComparison.Ordinal);
            Assert.EndsWith("apply refused, nothing was redirected", error.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
        }

        Assert.Equal(code, Code(worker.Pid, compute));
        Assert.Equal(maps, File.ReadAllLines($"/proc/{worker.Pid}/maps"));
        worker.AssertValueBecomes("compute", 3);
        var calls = worker.NextValue("calls");
        Assert.True(worker.NextValue("calls") > calls, "the threads run on");
    }

    [Fact]
    public void A_post_apply_hook_that_crashes_is_reported_and_the_payload_stays_applied_in_a_living_target()
    {
        using var worker = StartWorker();
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("crash")));

        Assert.Equal(LivePatchRefusal.HookFailed, error.Refusal);
        Assert.Contains("its post-apply hook crash", error.Message, StringComparison.Ordinal);
        Assert.Contains("crashed with SIGSEGV", error.Message, StringComparison.Ordinal);
        Assert.Contains("(address 0x10)", error.Message, StringComparison.Ordinal);
        Assert.EndsWith("the payload is applied", error.Message, StringComparison.Ordinal);
        Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
        worker.AssertValueBecomes("compute", 102);
        patcher.Revert("crash");
        worker.AssertValueBecomes("compute", 3);
        Assert.False(worker.HasExited);
    }

    [Fact]
    public void A_hook_that_calls_abort_is_abandoned_as_a_crash_within_its_timeout_and_the_target_lives()
    {
        using var worker = StartWorker();
        var compute = worker.ReadyAddress("compute");
        var code = Code(worker.Pid, compute);
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("aborting")));

        Assert.Equal(LivePatchRefusal.HookFailed, error.Refusal);
        Assert.Contains("its pre-apply hook give_up", error.Message, StringComparison.Ordinal);
        Assert.Contains("crashed with SIGABRT", error.Message, StringComparison.Ordinal);
        Assert.EndsWith("apply refused, nothing was redirected", error.Message, StringComparison.Ordinal);
        Assert.Empty(patcher.List());
        Assert.Equal(code, Code(worker.Pid, compute));
        worker.AssertValueBecomes("compute", 3);
        Assert.False(worker.HasExited);
    }

    [Fact]
    public void The_command_exits_4_on_a_veto_naming_the_hook_and_its_code()
    {
        using var worker = StartWorker();

        var result = LivepatchCli.Run("apply", worker.Pid.ToString(CultureInfo.InvariantCulture), Build("veto"), "--timeout", "2000");

        Assert.Equal(4, result.ExitCode);
        Assert.Contains("its pre-apply hook refuse", result.Error, StringComparison.Ordinal);
        Assert.Contains("returned 3", result.Error, StringComparison.Ordinal);
        worker.AssertValueBecomes("compute", 3);
    }
}
