using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// livepatch killed (SIGKILL, from inside, at a named step) in the middle of apply, revert, replace and unload: the
/// target runs on untraced, each site holds its old or its new bytes, list shows the interrupted action, other actions
/// refuse, recover completes or rolls it back, and the record then matches the code byte by byte. The target has
/// three functions 1 KiB apart, so a payload replacing them is written as three ranges and "between ranges" exists.
/// </summary>
[Collection(ProcessTests.Name)]
public class CrashSafetyTests
{
    private const string TargetFlags = "-O2 -g -pthread -fcf-protection=full";
    private const string KillAt = "LIVEPATCH_TEST_KILL_AT";
    private static readonly string[] Functions = ["alpha", "beta", "delta"];

    // Each function's value under each payload (the target computes f(0)); a payload absent from a column leaves it alone.
    private static readonly Dictionary<string, long[]> Values = new()
    {
        [""] = [1, 2, 3],
        ["trio_fix"] = [101, 102, 103],
        ["trio_next"] = [201, 202, 0],
    };

    private static readonly Lazy<string> FixObject = new(() => TestPayloads.Build("live/crash/trio_fix.c"));
    private static readonly Lazy<string> NextObject = new(() => TestPayloads.Build("live/crash/trio_next.c"));

    private static string Fix => FixObject.Value;

    private static string Next => NextObject.Value;

    /// <summary>Action, the step livepatch is killed at, what recover does, and the record after it (name:state, oldest first).</summary>
    public static TheoryData<string, string, string, string> Steps => new()
    {
        { "apply", "load-recorded", "rolled back", "" },
        { "apply", "block-2-mapped", "rolled back", "" },
        { "apply", "intent-recorded", "rolled back", "" },
        { "apply", "range-1-written", "rolled back", "trio_fix:reverted" },
        { "apply", "range-2-written", "rolled back", "trio_fix:reverted" },
        { "apply", "sites-written", "completed", "trio_fix:applied" },
        { "apply", "record-written", "", "trio_fix:applied" },
        { "apply-loaded", "intent-recorded", "rolled back", "trio_fix:loaded" },
        { "apply-loaded", "range-2-written", "rolled back", "trio_fix:reverted" },
        { "revert", "intent-recorded", "rolled back", "trio_fix:applied" },
        { "revert", "range-2-written", "rolled back", "trio_fix:applied" },
        { "revert", "sites-written", "completed", "trio_fix:reverted" },
        { "replace", "block-1-mapped", "rolled back", "trio_fix:applied" },
        { "replace", "intent-recorded", "rolled back", "trio_fix:applied" },
        { "replace", "range-1-written", "rolled back", "trio_fix:applied,trio_next:reverted" },
        { "replace", "sites-written", "completed", "trio_fix:reverted,trio_next:applied" },
        { "unload", "intent-recorded", "rolled back", "trio_fix:reverted" },
        { "unload", "block-1-unmapped", "completed", "" },
        { "unload", "record-written", "", "" },
    };

    [Theory]
    [MemberData(nameof(Steps))]
    public void Killed_at_a_step_the_target_runs_on_each_site_is_old_or_new_and_recover_ends_the_action(string action, string step, string outcome, string finalRecord)
    {
        using var trio = RunningTarget.Start("targets/trio.c", TargetFlags, "1");
        var sites = Functions.Select(f => PatchAddress(trio, f)).ToArray();
        var original = ReadSites(trio.Pid, sites);
        Prepare(trio, action);

        var killed = LivepatchCli.RunWith(new Dictionary<string, string> { [KillAt] = step }, ActionArguments(trio, action));

        Assert.True(killed.ExitCode == 128 + 9, $"livepatch {action} killed at {step} exited {killed.ExitCode}, not by SIGKILL: {killed.Error}");
        AssertRunsUntraced(trio);
        var interrupted = LivePatcher.Interrupted(trio.Pid);
        if (outcome == "")
        {
            Assert.Null(interrupted);
            Assert.Contains("nothing to recover", Livepatch("recover", Pid(trio)).Output, StringComparison.Ordinal);
        }
        else
        {
            Assert.NotNull(interrupted);
            Assert.False(interrupted.InProgress);
            AssertEachSiteOldOrNew(trio.Pid, interrupted.Action);
            var mapped = interrupted.Action.Mapped.Concat(interrupted.Action.Unmaps).ToList();
            var listed = Livepatch("list", Pid(trio));
            // Killed while the payload's memory was being mapped, the action is the load that maps it.
            var acted = step is "load-recorded" || step.EndsWith("-mapped", StringComparison.Ordinal) ? "load" : action == "apply-loaded" ? "apply" : action;
            Assert.Contains($"process {trio.Pid}: interrupted: {acted} of 'trio_", listed.Output, StringComparison.Ordinal);
            var refused = Livepatch("revert", Pid(trio), "trio_fix");
            Assert.Equal(4, refused.ExitCode);
            Assert.Contains($"run livepatch recover {trio.Pid} first", refused.Error, StringComparison.Ordinal);

            var recovered = Livepatch("recover", Pid(trio), "--timeout", "2000");

            Assert.True(recovered.ExitCode == 0, recovered.Error);
            Assert.Contains($"was {outcome}", recovered.Output, StringComparison.Ordinal);
            Assert.Null(LivePatcher.Interrupted(trio.Pid));
            // Memory mapped for a payload that never became reachable, and an unload's blocks, are gone once nothing names them.
            var named = LivePatcher.List(trio.Pid).SelectMany(p => p.Memory).ToList();
            foreach (var block in mapped.Where(b => !named.Contains(b)))
                Assert.False(IsMapped(trio.Pid, block), $"block 0x{block.Address:x} ({block.Use}) is still mapped though no payload names it");
        }
        Assert.Equal(finalRecord, string.Join(",", LivePatcher.List(trio.Pid).Select(p => $"{p.Name}:{p.State.ToString().ToLowerInvariant()}")));
        AssertCodeMatchesRecord(trio, sites, original);
    }

    [Fact]
    public void A_recover_killed_in_turn_is_finished_by_the_next_one_the_same_way()
    {
        using var trio = RunningTarget.Start("targets/trio.c", TargetFlags, "1");
        var sites = Functions.Select(f => PatchAddress(trio, f)).ToArray();
        var original = ReadSites(trio.Pid, sites);
        Assert.Equal(128 + 9, LivepatchCli.RunWith(new Dictionary<string, string> { [KillAt] = "range-2-written" }, ActionArguments(trio, "apply")).ExitCode);

        // Two sites are new: recover rolls back, and dies after writing the first back.
        var first = LivepatchCli.RunWith(new Dictionary<string, string> { [KillAt] = "range-1-written" }, "recover", Pid(trio), "--timeout", "2000");

        Assert.Equal(128 + 9, first.ExitCode);
        AssertRunsUntraced(trio);
        var interrupted = LivePatcher.Interrupted(trio.Pid)!;
        Assert.Equal(RecoveryOutcome.RolledBack, interrupted.Action.Recovery);
        Assert.True(interrupted.Action.NewCodeMayHaveRun);
        Assert.Equal([SiteState.Old, SiteState.New, SiteState.Old], interrupted.Sites);
        // Site actions touch no payload, but they too wait for the recover.
        var key = Livepatch("key", Pid(trio), "verbose", "on");
        Assert.Equal(4, key.ExitCode);
        Assert.Contains($"run livepatch recover {trio.Pid} first", key.Error, StringComparison.Ordinal);
        var second = Livepatch("recover", Pid(trio), "--timeout", "2000");
        Assert.Equal(0, second.ExitCode);
        Assert.Contains("was rolled back (1 of 3 sites were new, 1 rewritten", second.Output, StringComparison.Ordinal);
        Assert.Contains("'trio_fix' is recorded as reverted", second.Output, StringComparison.Ordinal);
        Assert.Equal(original, ReadSites(trio.Pid, sites));
        AssertCodeMatchesRecord(trio, sites, original);
    }

    [Fact]
    public void A_site_another_tool_changed_is_refused_by_recover_and_abandon_forgets_the_action_once_it_is_put_right()
    {
        using var trio = RunningTarget.Start("targets/trio.c", TargetFlags, "1");
        var sites = Functions.Select(f => PatchAddress(trio, f)).ToArray();
        var original = ReadSites(trio.Pid, sites);
        Assert.Equal(128 + 9, LivepatchCli.RunWith(new Dictionary<string, string> { [KillAt] = "range-1-written" }, ActionArguments(trio, "apply")).ExitCode);
        var intent = LivePatcher.Interrupted(trio.Pid)!.Action;
        var alpha = intent.Sites.Single(s => s.Function.EndsWith("!alpha", StringComparison.Ordinal));
        Assert.Equal(Convert.ToHexStringLower(alpha.NewBytes), ReadSites(trio.Pid, sites)[0]);
        // Another tool points alpha at the payload's beta (harmless: it returns x + 102), with the process stopped.
        var betaFixed = intent.After.Single().Functions.Single(f => f.Name.EndsWith("!beta", StringComparison.Ordinal)).NewAddress;
        var jump = new LivePatch.X86.PatchBuffer(alpha.Address, 5);
        jump.WriteJump(betaFixed);
        WhileStopped(trio.Pid, process => process.WriteMemory(alpha.Address, jump.Bytes));
        trio.AssertValueBecomes("alpha", 102);

        var refused = Livepatch("recover", Pid(trio), "--timeout", "2000");

        Assert.Equal(4, refused.ExitCode);
        Assert.Contains("neither the old", refused.Error, StringComparison.Ordinal);
        Assert.Contains("another tool changed it; recover writes nothing", refused.Error, StringComparison.Ordinal);
        Assert.Equal(Convert.ToHexStringLower(jump.Bytes), ReadSites(trio.Pid, sites)[0]);
        // The operator puts the function back as it was, then forgets the action.
        WhileStopped(trio.Pid, process => process.WriteMemory(alpha.Address, Convert.FromHexString(original[0])));
        var abandoned = Livepatch("recover", Pid(trio), "--abandon", "--timeout", "2000");
        Assert.Equal(0, abandoned.ExitCode);
        Assert.Contains("was abandoned: nothing written", abandoned.Output, StringComparison.Ordinal);
        Assert.Contains("'trio_fix' is recorded as reverted", abandoned.Output, StringComparison.Ordinal);
        Assert.Null(LivePatcher.Interrupted(trio.Pid));
        Assert.Equal("trio_fix:reverted", string.Join(",", LivePatcher.List(trio.Pid).Select(p => $"{p.Name}:{p.State.ToString().ToLowerInvariant()}")));
        AssertCodeMatchesRecord(trio, sites, original);
    }

    [Fact]
    public void The_target_killed_while_apply_retries_ends_livepatch_with_exit_2_at_once()
    {
        var spinner = Gcc.FixturePath("targets/spinner.S");
        using var spinning = RunningTarget.Start("targets/spinning.c", $"-O2 -g -pthread {spinner}");
        // Well into its retries: the back-off between stops has grown.
        using var background = LivepatchCli.StartHolding(spinning.Pid, TimeSpan.FromMilliseconds(1500),
            "apply", Pid(spinning), TestPayloads.Build("live/apply/spin.c"), "--timeout", "20000");
        var livepatch = background.Process;
        Assert.False(livepatch.HasExited, "apply is still retrying");

        var killedAt = DateTime.Now;
        ExternalTool.Run("kill", "-9", spinning.Pid.ToString(CultureInfo.InvariantCulture));

        Assert.True(livepatch.WaitForExit(10_000), "livepatch ends within seconds, not at its 20 s timeout");
        livepatch.WaitForExit(); // flushes the error lines
        var took = livepatch.ExitTime - killedAt;
        Assert.True(took < TimeSpan.FromSeconds(1), $"livepatch exited {took.TotalMilliseconds:0} ms after the target was killed");
        Assert.Equal(2, livepatch.ExitCode);
        Assert.Matches($@"^livepatch: .*process {spinning.Pid}.* exited", background.Error);
        Assert.Single(background.Error.TrimEnd().Split('\n'));
    }

    private static LivepatchCli.Result Livepatch(params string[] arguments) => LivepatchCli.Run(arguments);

    private static string Pid(RunningTarget target) => target.Pid.ToString(CultureInfo.InvariantCulture);

    // What each action needs in place before it runs: a loaded payload, an applied one, a reverted one.
    private static void Prepare(RunningTarget trio, string action)
    {
        string[][] steps = action switch
        {
            "apply-loaded" => [["load", Pid(trio), Fix]],
            "revert" or "replace" => [["apply", Pid(trio), Fix, "--timeout", "2000"]],
            "unload" => [["apply", Pid(trio), Fix, "--timeout", "2000"], ["revert", Pid(trio), "trio_fix", "--timeout", "2000"]],
            _ => [],
        };
        foreach (var arguments in steps)
        {
            var result = Livepatch(arguments);
            Assert.True(result.ExitCode == 0, $"livepatch {string.Join(' ', arguments)}: {result.Error}");
        }
    }

    private static string[] ActionArguments(RunningTarget trio, string action) => action switch
    {
        "apply" => ["apply", Pid(trio), Fix, "--timeout", "2000"],
        "apply-loaded" => ["apply", Pid(trio), "trio_fix", "--timeout", "2000"],
        "revert" => ["revert", Pid(trio), "trio_fix", "--timeout", "2000"],
        "replace" => ["replace", Pid(trio), Next, "--timeout", "2000"],
        "unload" => ["unload", Pid(trio), "trio_fix", "--timeout", "2000"],
        _ => throw new ArgumentException(action, nameof(action)),
    };

    // After endbr64, where the jump goes.
    private static ulong PatchAddress(RunningTarget target, string function)
    {
        var address = target.ReadyAddress(function);
        using var process = TargetProcess.Open(target.Pid);
        return process.ReadMemory(address, 4).AsSpan().SequenceEqual(new byte[] { 0xf3, 0x0f, 0x1e, 0xfa }) ? address + 4 : address;
    }

    private static string[] ReadSites(int pid, ulong[] sites)
    {
        using var process = TargetProcess.Open(pid);
        return [.. sites.Select(s => Convert.ToHexStringLower(process.ReadMemory(s, 5)))];
    }

    // The kernel detached the dead tracer's threads and they run: none in a tracing stop, the main loop still ticks.
    private static void AssertRunsUntraced(RunningTarget target)
    {
        Assert.Equal(0, RunningTarget.TracerProcess(target.Pid));
        Assert.DoesNotContain("t", target.ThreadStates().Values);
        var tick = target.NextValue("tick");
        Assert.True(target.NextValue("tick") > tick, "the target still runs");
        Assert.False(target.HasExited);
    }

    private static void AssertEachSiteOldOrNew(int pid, PendingAction action)
    {
        using var process = TargetProcess.Open(pid);
        foreach (var site in action.Sites)
        {
            var now = process.ReadMemory(site.Address, site.OldBytes.Length);
            Assert.True(now.AsSpan().SequenceEqual(site.OldBytes) || now.AsSpan().SequenceEqual(site.NewBytes),
                $"{site.Function} at 0x{site.Address:x} holds {Convert.ToHexStringLower(now)}: neither the old {Convert.ToHexStringLower(site.OldBytes)} nor the new {Convert.ToHexStringLower(site.NewBytes)}");
        }
    }

    // Byte by byte, every function holds the jump of the payload applied on top there, or its original code; and it
    // computes what that payload (or none) computes. Read through list --json, as an operator would.
    private static void AssertCodeMatchesRecord(RunningTarget trio, ulong[] sites, string[] original)
    {
        var listed = Livepatch("list", Pid(trio), "--json");
        Assert.Equal(0, listed.ExitCode);
        Assert.Equal("", listed.Error);
        using var json = JsonDocument.Parse(listed.Output);
        var applied = json.RootElement.EnumerateArray().Where(p => p.GetProperty("state").GetString() == "applied").ToList();
        var now = ReadSites(trio.Pid, sites);
        for (var i = 0; i < sites.Length; i++)
        {
            var top = applied.LastOrDefault(p => p.GetProperty("functions").EnumerateArray().Any(f => f.GetProperty("patchAddress").GetUInt64() == sites[i]));
            var expected = top.ValueKind == JsonValueKind.Undefined ? original[i]
                : top.GetProperty("functions").EnumerateArray().First(f => f.GetProperty("patchAddress").GetUInt64() == sites[i]).GetProperty("patchBytes").GetString();
            Assert.True(expected == now[i], $"{Functions[i]} at 0x{sites[i]:x} holds {now[i]}; the record says {expected}");
            var payload = top.ValueKind == JsonValueKind.Undefined ? "" : top.GetProperty("name").GetString()!;
            trio.AssertValueBecomes(Functions[i], Values[payload][i]);
        }
    }

    // Job control stops every thread, so a write of several bytes is never seen half done.
    private static void WhileStopped(int pid, Action<TargetProcess> write)
    {
        var id = pid.ToString(CultureInfo.InvariantCulture);
        ExternalTool.Run("kill", "-STOP", id);
        try
        {
            while (Directory.GetDirectories($"/proc/{pid}/task").Any(t => !File.ReadAllText($"{t}/stat").Split(") ")[1].StartsWith('T')))
                Thread.Sleep(1);
            using var process = TargetProcess.Open(pid);
            write(process);
        }
        finally
        {
            ExternalTool.Run("kill", "-CONT", id);
        }
    }

    private static bool IsMapped(int pid, MappedBlock block) =>
        MemoryMap.Read(pid).Regions.Any(r => r.Contains(block.Address));
}
