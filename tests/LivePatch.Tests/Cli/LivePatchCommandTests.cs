using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Cli;

/// <summary>The livepatch command run as separate processes, as an operator runs it.</summary>
[Collection(ProcessTests.Name)]
public class LivePatchCommandTests
{
    private static LivepatchCli.Result Livepatch(params string[] arguments) => LivepatchCli.Run(arguments);

    private static string Pid(RunningTarget target) => target.Pid.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public void Separate_runs_apply_list_and_revert_through_the_record_in_the_target()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");
        var fix = TestPayloads.Build("live/apply/fix.c");

        var applied = Livepatch("apply", Pid(worker), fix, "--timeout", "2000");
        Assert.Equal(0, applied.ExitCode);
        Assert.Matches(@"^applied fix to \d+: .*!compute -> compute_fixed; 5 threads stopped, pause \d+ µs", applied.Output);
        worker.AssertValueBecomes("compute", 102);

        var listed = Livepatch("list", Pid(worker), "--json");
        Assert.Equal(0, listed.ExitCode);
        using (var json = JsonDocument.Parse(listed.Output))
        {
            var payload = Assert.Single(json.RootElement.EnumerateArray().ToList());
            Assert.Equal("fix", payload.GetProperty("name").GetString());
            Assert.Equal("applied", payload.GetProperty("state").GetString());
        }
        var table = Livepatch("list", Pid(worker));
        Assert.Contains("compute_fixed", table.Output, StringComparison.Ordinal);

        var reverted = Livepatch("revert", Pid(worker), "fix", "--timeout", "2000");
        Assert.Equal(0, reverted.ExitCode);
        Assert.StartsWith("reverted fix in ", reverted.Output, StringComparison.Ordinal);
        worker.AssertValueBecomes("compute", 3);
        Assert.Contains("\"reverted\"", Livepatch("list", Pid(worker), "--json").Output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_second_livepatch_while_one_holds_the_process_fails_saying_it_is_busy()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var fix = TestPayloads.Build("live/apply/fix.c");
        using var first = LivePatcher.Attach(worker.Pid, Generous.Options);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        var second = Livepatch("apply", Pid(worker), fix);

        Assert.Equal(4, second.ExitCode);
        Assert.Matches(@"^livepatch: process \d+ is busy: it is already traced by process \d+", second.Error);
        Assert.Single(second.Error.TrimEnd().Split('\n'));
        before.AssertUnchanged();
    }

    [Theory]
    [InlineData("unknown", 3, "unknown symbol 'no_such_function'")]
    [InlineData("tiny", 4, "too short for a 5-byte jump")]
    public void Refusals_print_one_line_and_exit_with_their_code(string payload, int exitCode, string text)
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        var result = Livepatch("apply", Pid(worker), TestPayloads.Build($"live/apply/{payload}.c"), "--timeout", "2000");

        Assert.Equal(exitCode, result.ExitCode);
        Assert.Contains(text, result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.TrimEnd().Split('\n'));
        Assert.Equal("", result.Output);
        before.AssertUnchanged();
    }

    // SIGTERM (as Ctrl-C) while apply waits for a thread to leave the function: it stops at once, target as it was.
    [Fact]
    public void A_signal_during_apply_cancels_it_and_leaves_the_target_untouched_and_detached()
    {
        var spinner = Gcc.FixturePath("targets/spinner.S");
        using var spinning = RunningTarget.Start("targets/spinning.c", $"-O2 -g -pthread {spinner}");
        var before = TargetSnapshot.Take(spinning.Pid, spinning.ReadyAddress("spin_entry"));
        // Into its retries: attached, then some more.
        using var background = LivepatchCli.StartHolding(spinning.Pid, TimeSpan.FromMilliseconds(500),
            "apply", Pid(spinning), TestPayloads.Build("live/apply/spin.c"), "--timeout", "10000");
        var livepatch = background.Process;
        Assert.False(livepatch.HasExited, "apply is still retrying");

        ExternalTool.Run("kill", "-TERM", livepatch.Id.ToString(CultureInfo.InvariantCulture));

        Assert.True(livepatch.WaitForExit(3000), "livepatch stops within a few seconds, not at its 10 s timeout");
        Assert.Equal(130, livepatch.ExitCode);
        livepatch.WaitForExit(); // flushes the error lines
        Assert.Contains("livepatch: interrupted: ", background.Error, StringComparison.Ordinal);
        Assert.Contains("nothing was changed", background.Error, StringComparison.Ordinal);
        before.AssertUnchanged();
        Assert.Equal(0, RunningTarget.TracerProcess(spinning.Pid));
        var tick = spinning.NextValue("tick");
        Assert.True(spinning.NextValue("tick") > tick, "the target still runs");
    }

    [Fact]
    public void A_pid_that_does_not_exist_exits_2()
    {
        var result = Livepatch("list", "2147483000");

        Assert.Equal(2, result.ExitCode);
        Assert.Equal("livepatch: no process with PID 2147483000", result.Error.Trim());
    }

    [Fact]
    public void Reverting_what_is_not_applied_exits_4_naming_it()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");

        var result = Livepatch("revert", Pid(worker), "fix");

        Assert.Equal(4, result.ExitCode);
        Assert.Contains("has no payload 'fix'", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Sites_lists_every_site_disassembled_with_the_choice_for_this_cpu()
    {
        var module = LivePatch.Tests.Sites.SiteSamples.PathOf("sites-pie");
        var cpu = LivePatch.X86.CpuFeatures.Detect();

        var result = Livepatch("sites", module, "--json");

        Assert.Equal(0, result.ExitCode);
        using var json = JsonDocument.Parse(result.Output);
        var rows = json.RootElement.EnumerateArray().ToList();
        Assert.Equal(LivePatch.Tests.Sites.SiteSamples.CountUses("LP_ALTERNATIVE") + LivePatch.Tests.Sites.SiteSamples.CountUses("LP_LOCK_PREFIX"), rows.Count);
        var popcnt = Assert.Single(rows, r => r.GetProperty("replacement").GetString()!.StartsWith("popcnt ", StringComparison.Ordinal));
        Assert.Equal(cpu.Has(LivePatch.X86.CpuFeature.Popcnt) ? "replacement" : "original", popcnt.GetProperty("chosen").GetString());
        Assert.All(rows.Where(r => r.GetProperty("kind").GetString() == "lock prefix"),
            r => Assert.StartsWith("lock ", r.GetProperty("original").GetString(), StringComparison.Ordinal));
    }

    [Fact]
    public void Sites_of_a_running_process_show_each_site_as_it_is_now()
    {
        using var target = RunningTarget.Start("sites/keys_target.c", TestTargets.SitesFlags);
        static List<(string Kind, string State, string Module)> Rows(LivepatchCli.Result result)
        {
            Assert.Equal(0, result.ExitCode);
            using var json = JsonDocument.Parse(result.Output);
            return [.. json.RootElement.EnumerateArray().Select(r => (r.GetProperty("kind").GetString()!, r.GetProperty("state").GetString()!, r.GetProperty("module").GetString()!))];
        }

        var before = Rows(Livepatch("sites", Pid(target), "--json"));
        Assert.Equal(0, Livepatch("key", Pid(target), "tracing", "on", "--timeout", "2000").ExitCode);
        var after = Rows(Livepatch("sites", Pid(target), "--json"));

        Assert.Equal(3, before.Count);
        Assert.All(before, r => Assert.Equal(("static key", "off"), (r.Kind, r.State)));
        Assert.All(before, r => Assert.StartsWith("keys_target", r.Module, StringComparison.Ordinal));
        Assert.Equal(["off", "off", "on"], after.Select(r => r.State).Order().ToArray());
    }

    [Fact]
    public void Sites_on_a_file_that_is_not_elf_exits_3_in_one_line()
    {
        var text = Path.Combine(ExternalTool.ScratchDirectory("not-elf"), "notes.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("this is a text file, not an ELF module\n", 4)));

        var result = Livepatch("sites", text);

        Assert.Equal(3, result.ExitCode);
        Assert.StartsWith("livepatch: not an ELF file", result.Error, StringComparison.Ordinal);
        Assert.Single(result.Error.TrimEnd().Split('\n'));
    }

    [Fact]
    public void Key_switches_a_static_key_from_a_separate_run_and_refuses_unknown_keys()
    {
        using var target = RunningTarget.Start("sites/keys_target.c", TestTargets.SitesFlags);

        var on = Livepatch("key", Pid(target), "verbose", "on", "--timeout", "2000");
        var again = Livepatch("key", Pid(target), "verbose", "on");
        var unknown = Livepatch("key", Pid(target), "debug", "on");
        var bad = Livepatch("key", Pid(target), "verbose", "maybe");

        Assert.Equal(0, on.ExitCode);
        Assert.Matches(@"^static key verbose in \d+ is on: 2 of 2 sites written; 3 threads stopped, pause \d+ µs", on.Output);
        Assert.StartsWith("static key verbose in ", again.Output, StringComparison.Ordinal);
        Assert.Contains("is already on (2 sites)", again.Output, StringComparison.Ordinal);
        Assert.Equal(4, unknown.ExitCode);
        Assert.Contains("no static key 'debug'", unknown.Error, StringComparison.Ordinal);
        Assert.Equal(1, bad.ExitCode);
    }

    [Fact]
    public void Callsites_rewrites_a_running_process_and_restores_it_from_separate_runs()
    {
        using var target = RunningTarget.Start(LivePatch.Tests.Sites.CallSiteSamples.Source, LivePatch.Tests.Sites.CallSiteSamples.TargetFlags());
        static List<(string Name, string State)> CallSiteRows(LivepatchCli.Result result)
        {
            Assert.Equal(0, result.ExitCode);
            using var json = JsonDocument.Parse(result.Output);
            return [.. json.RootElement.EnumerateArray().Where(r => r.GetProperty("kind").GetString() == "callsite")
                .Select(r => (r.GetProperty("name").GetString()!, r.GetProperty("state").GetString()!))];
        }

        var applied = Livepatch("callsites", Pid(target), "--timeout", "2000");
        var rows = CallSiteRows(Livepatch("sites", Pid(target), "--json"));
        var again = Livepatch("callsites", Pid(target));
        var direct = Livepatch("callsites", Pid(target), "--backend", "direct");
        var restored = Livepatch("callsites", Pid(target), "--restore", "--timeout", "2000");

        Assert.Equal(0, applied.ExitCode);
        Assert.Matches(@"^call sites of callsites_target-\w+ in \d+: 7 of 9 rewritten, 7 written; 3 threads stopped, pause \d+ µs", applied.Output);
        Assert.Contains("  platform.rdtsc: slot holds native_rdtsc: native patchlet lp_native_rdtsc\n", applied.Output, StringComparison.Ordinal);
        Assert.Contains("  platform.pid: slot holds getpid at 0x", applied.Output, StringComparison.Ordinal);
        Assert.Equal(9, rows.Count);
        Assert.Equal(["platform.lean", "platform.pid"], rows.Where(r => r.State == "indirect").Select(r => r.Name).Order().ToArray());
        Assert.Equal(7, rows.Count(r => r.State == "rewritten"));
        Assert.Contains("7 of 9 rewritten already (9 sites)", again.Output, StringComparison.Ordinal);
        Assert.Equal(4, direct.ExitCode);
        Assert.Contains("livepatch callsites PID --restore", direct.Error, StringComparison.Ordinal);
        Assert.Equal(0, restored.ExitCode);
        Assert.Contains("indirect calls restored, 7 written", restored.Output, StringComparison.Ordinal);
        Assert.All(CallSiteRows(Livepatch("sites", Pid(target), "--json")), r => Assert.Equal("indirect", r.State));
        target.AssertValueBecomes("identity", 42);
    }

    [Fact]
    public void Sites_lists_the_call_sites_of_a_file_with_the_default_backends_choice()
    {
        var result = Livepatch("sites", LivePatch.Tests.Sites.CallSiteSamples.PathOf("callsites-pie"), "--json");

        Assert.Equal(0, result.ExitCode);
        using var json = JsonDocument.Parse(result.Output);
        var rows = json.RootElement.EnumerateArray().Where(r => r.GetProperty("kind").GetString() == "callsite")
            .ToDictionary(r => r.GetProperty("name").GetString()!);
        Assert.Equal(9, rows.Count);
        Assert.Equal("rdtsc; shl $0x20, %rdx; or %rdx, %rax", rows["platform.rdtsc"].GetProperty("replacement").GetString());
        Assert.Equal("slot holds native_rdtsc: native patchlet lp_native_rdtsc", rows["platform.rdtsc"].GetProperty("reason").GetString());
        Assert.Equal("ud2", rows["platform.missing"].GetProperty("replacement").GetString());
        Assert.StartsWith("call", rows["platform.add"].GetProperty("original").GetString(), StringComparison.Ordinal);
        Assert.Equal("original", rows["platform.pid"].GetProperty("chosen").GetString());
    }

    [Fact]
    public void The_demo_applies_and_reverts_and_leaves_nothing_running()
    {
        var result = Livepatch("demo", "--threads", "2");

        Assert.Equal(0, result.ExitCode);
        Assert.Contains("February has 29 days in 1900", result.Output, StringComparison.Ordinal);
        Assert.Contains("February has 28 days in 1900", result.Output, StringComparison.Ordinal);
        Assert.Contains("== revert:", result.Output, StringComparison.Ordinal);
        var lines = result.Output.Split('\n');
        var afterApply = Array.FindIndex(lines, l => l.StartsWith("== apply:", StringComparison.Ordinal));
        var afterRevert = Array.FindIndex(lines, l => l.StartsWith("== revert:", StringComparison.Ordinal));
        Assert.Contains("28 days in 1900", lines[afterApply + 1], StringComparison.Ordinal);
        Assert.Contains("29 days in 1900", lines[afterRevert + 1], StringComparison.Ordinal);
        Assert.DoesNotContain(Process.GetProcesses(), p => SafeName(p) == "target" && File.Exists($"/proc/{p.Id}/exe") && LinkOf(p.Id).Contains("livepatch-demo-", StringComparison.Ordinal));
    }

    [Fact]
    public void Sites_up_drops_lock_prefixes_of_a_single_thread_and_puts_them_back_before_its_next_thread_runs()
    {
        var trigger = Path.Combine(Path.GetTempPath(), $"livepatch-trigger-{Guid.NewGuid():N}");
        try
        {
            using var target = RunningTarget.Start("sites/locks_target.c", TestTargets.SitesFlags, trigger, "thread");
            using var livepatch = LivepatchCli.Start("sites", Pid(target), "--up", "--timeout", "2000");
            try
            {
                Assert.StartsWith($"process {target.Pid}: 1 of 1 lock prefixes dropped (one thread;", livepatch.StandardOutput.ReadLine(), StringComparison.Ordinal);
                Assert.StartsWith($"watching process {target.Pid}", livepatch.StandardOutput.ReadLine(), StringComparison.Ordinal);

                File.WriteAllText(trigger, "");

                Assert.Matches(@"^thread \d+ was created: lock prefixes restored before it ran$", livepatch.StandardOutput.ReadLine());
                Assert.True(livepatch.WaitForExit(10_000));
                Assert.Equal(0, livepatch.ExitCode);
                Assert.Equal("before=3e", target.WaitForLine(l => l.StartsWith("before=", StringComparison.Ordinal), TimeSpan.FromSeconds(10)));
                Assert.Equal("thread-saw=f0", target.WaitForLine(l => l.StartsWith("thread-saw=", StringComparison.Ordinal), TimeSpan.FromSeconds(10)));
                Assert.Equal(0, RunningTarget.TracerProcess(target.Pid));

                var again = Livepatch("sites", Pid(target), "--up");
                Assert.Equal(4, again.ExitCode);
                Assert.Contains("2 threads that may run on several CPUs", again.Error, StringComparison.Ordinal);
                Assert.Equal($"process {target.Pid}: all 1 lock prefixes are in place", Livepatch("sites", Pid(target), "--smp").Output.Trim());
            }
            finally
            {
                if (!livepatch.HasExited)
                    livepatch.Kill();
            }
        }
        finally
        {
            File.Delete(trigger);
        }
    }

    private static string SafeName(Process process)
    {
        try
        {
            return process.ProcessName;
        }
        catch (InvalidOperationException)
        {
            return "";
        }
    }

    private static string LinkOf(int pid)
    {
        try
        {
            return File.ResolveLinkTarget($"/proc/{pid}/exe", false)?.FullName ?? "";
        }
        catch (IOException)
        {
            return "";
        }
    }
}
