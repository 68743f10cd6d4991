using System.Text.RegularExpressions;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;
using LivePatch.X86;
using LivePatch.Payloads;

namespace LivePatch.Tests.Live;

/// <summary>Load, apply by name, revert, replace, unload, check; stacking, dependencies, build-ids, changed code, deny list.</summary>
[Collection(ProcessTests.Name)]
public partial class LifecycleTests
{
    private static string Fix => TestPayloads.Build("live/apply/fix.c");

    private static string Lifecycle(string name, string flags = "-O2") => TestPayloads.Build($"live/lifecycle/{name}.c", flags);

    [Fact]
    public void Load_apply_by_name_revert_apply_again_and_unload()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        worker.AssertValueBecomes("compute", 3);
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var loaded = patcher.Load(Fix);

        Assert.Equal(PayloadState.Loaded, Assert.Single(patcher.List()).State);
        Assert.Null(patcher.List()[0].AppliedAt);
        worker.AssertValueBecomes("compute", 3);
        patcher.ApplyLoaded("fix");
        worker.AssertValueBecomes("compute", 102);
        patcher.Revert("fix");
        worker.AssertValueBecomes("compute", 3);
        patcher.ApplyLoaded("fix");
        worker.AssertValueBecomes("compute", 102);
        patcher.Revert("fix");

        var unloaded = patcher.Unload("fix");

        Assert.Empty(patcher.List());
        Assert.Equal(loaded.Memory, unloaded.Memory);
        var maps = File.ReadAllText($"/proc/{worker.Pid}/maps");
        Assert.All(loaded.Memory, b => Assert.DoesNotContain($"{b.Address:x}-", maps, StringComparison.Ordinal));
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void A_reverted_payload_whose_data_changed_must_be_loaded_again_and_an_applied_one_cannot_be_unloaded()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(Lifecycle("counting"));
        worker.AssertValueBecomes("compute", 102);
        Assert.Equal(LivePatchRefusal.StillApplied, Assert.Throws<PatchRefusedException>(() => patcher.Unload("counting")).Refusal);
        patcher.Revert("counting");

        var error = Assert.Throws<PatchRefusedException>(() => patcher.ApplyLoaded("counting"));

        Assert.Equal(LivePatchRefusal.ReloadRequired, error.Refusal);
        Assert.Contains("unload it and load it again", error.Message, StringComparison.Ordinal);
        worker.AssertValueBecomes("compute", 3);
        patcher.Unload("counting");
        patcher.Apply(Lifecycle("counting"));
        worker.AssertValueBecomes("compute", 102);
    }

    [Fact]
    public void Stacked_payloads_the_newest_wins_and_only_the_top_is_reverted()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(Fix);
        worker.AssertValueBecomes("compute", 102);

        var top = patcher.Apply(Lifecycle("plus200"));

        worker.AssertValueBecomes("compute", 202);
        Assert.Equal(Assert.Single(patcher.List()[0].Functions).PatchBytes, Assert.Single(top.Functions).OriginalBytes);
        var refused = Assert.Throws<PatchRefusedException>(() => patcher.Revert("fix"));
        Assert.Equal(LivePatchRefusal.NotOnTop, refused.Refusal);
        Assert.Contains("'plus200' was applied after it", refused.Message, StringComparison.Ordinal);
        patcher.Revert("plus200");
        worker.AssertValueBecomes("compute", 102);
        patcher.Revert("fix");
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void A_payload_that_depends_on_another_is_refused_until_that_one_is_applied()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Lifecycle("needs_fix")));

        Assert.Equal(LivePatchRefusal.DependencyMissing, error.Refusal);
        Assert.Contains("depends on payload 'fix', which is not applied", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        patcher.Apply(Fix);
        patcher.Apply(Lifecycle("needs_fix"));
        worker.AssertValueBecomes("compute", 302);
    }

    [Fact]
    public void Replace_under_eight_busy_threads_goes_from_old_to_new_with_nothing_in_between()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "8");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(Fix);
        worker.AssertValueBecomes("compute", 102);
        var mark = worker.LineCount; // from here every line was printed with fix applied
        var seen = new List<long>();

        for (var round = 0; round < 3; round++)
        {
            var report = patcher.Replace(Payload.Load(Lifecycle("plus200")));
            Assert.Equal(["fix"], report.Reverted);
            Assert.Equal(9, report.ThreadsStopped);
            seen.Add(worker.NextValue("compute"));
            patcher.Unload("fix");
            Assert.Equal(["plus200"], patcher.Replace(Payload.Load(Fix)).Reverted);
            seen.Add(worker.NextValue("compute"));
            patcher.Unload("plus200");
        }

        Assert.All(seen, value => Assert.Contains(value, new long[] { 102, 202 }));
        Assert.Equal("fix", Assert.Single(patcher.List()).Name);
        worker.NextValue("compute");
        var lines = worker.LinesSince(mark);
        Assert.True(lines.Count > 20, $"only {lines.Count} lines printed during the replaces");
        Assert.All(lines, line => Assert.Matches(@"^compute=(102|202) ", line));
    }

    [Fact]
    public void A_build_id_mismatch_is_refused_unless_forced_and_the_record_says_so()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var executable = Path.GetFileName(RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags));
        var actual = ElfFile.Load(RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags)).BuildId!;
        string Pinned(string buildId) => Lifecycle("pinned", $"-O2 -DMODULE=\"{executable}\" -DBUILD_ID=\"{buildId}\"");
        var wrong = new string('0', actual.Length);

        using (var patcher = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Pinned(wrong)));
            Assert.Equal(LivePatchRefusal.BuildIdMismatch, error.Refusal);
            Assert.Contains($"built for {executable} with build-id {wrong}", error.Message, StringComparison.Ordinal);
            Assert.Contains($"with build-id {actual}", error.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
        }
        using (var forced = LivePatcher.Attach(worker.Pid, new LivePatchOptions { Timeout = Generous.Options.Timeout, Force = true }))
        {
            forced.Apply(Pinned(wrong));
            worker.AssertValueBecomes("compute", 402);
            var check = Assert.Single(Assert.Single(forced.List()).BuildIds);
            Assert.Equal(new BuildIdCheck(executable, wrong, actual, Forced: true), check);
            forced.Revert("pinned");
            forced.Unload("pinned");
            worker.AssertValueBecomes("compute", 3);
        }
        using (var exact = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            exact.Apply(Pinned(actual));
            worker.AssertValueBecomes("compute", 402);
            Assert.False(Assert.Single(Assert.Single(exact.List()).BuildIds).Forced);
        }
    }

    [Fact]
    public void A_function_changed_by_another_tool_is_refused_by_check_and_apply_with_nothing_written()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var secret = worker.ReadyAddress("secret");
        var helper = worker.ReadyAddress("helper");
        var entry = secret + 4; // after endbr64 (-fcf-protection=full)
        // Another tool redirected secret() to helper(): secret(1) becomes 2. secret() runs on the main thread only,
        // once per 5 ms, so this unsynchronized 5-byte write practically never meets it.
        var jump = new PatchBuffer(entry, Branch.Rel32Length);
        jump.WriteJump(helper);
        using (var other = TargetProcess.Open(worker.Pid))
            other.WriteMemory(entry, jump.Bytes);
        worker.AssertValueBecomes("secret", 2);
        var before = TargetSnapshot.Take(worker.Pid, secret, worker.ReadyAddress("compute"));
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var payload = Payload.Load(TestPayloads.Build("live/apply/secret.c"));

        var byCheck = Assert.Throws<PatchRefusedException>(() => patcher.Check(payload));
        var byApply = Assert.Throws<PatchRefusedException>(() => patcher.Apply(payload));

        Assert.All(new[] { byCheck, byApply }, e => Assert.Equal(LivePatchRefusal.CodeChanged, e.Refusal));
        Assert.Contains($"holds {Convert.ToHexStringLower(jump.Bytes)}", byApply.Message, StringComparison.Ordinal);
        Assert.Contains("another tool changed it", byApply.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        Assert.Empty(patcher.List());
    }

    [Fact]
    public void Check_makes_every_check_and_writes_nothing_and_the_deny_list_is_honoured()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        var before = TargetSnapshot.Take(worker.Pid, worker.ReadyAddress("compute"));
        using (var patcher = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            var results = patcher.Check(Payload.Load(Fix));

            Assert.Contains(results, r => r.Name.EndsWith("!compute", StringComparison.Ordinal) && r.Detail.Contains("as in its file", StringComparison.Ordinal));
            Assert.Contains(results, r => r.Name == "link");
            before.AssertUnchanged();
            Assert.Empty(patcher.List());
        }
        using var denying = LivePatcher.Attach(worker.Pid, new LivePatchOptions { Timeout = Generous.Options.Timeout, Deny = ["compute"] });

        var error = Assert.Throws<PatchRefusedException>(() => denying.Apply(Fix));

        Assert.Equal(LivePatchRefusal.Denied, error.Refusal);
        Assert.Matches(new Regex(@"!compute in process \d+ is on the deny list"), error.Message);
        before.AssertUnchanged();
    }

    // A program built -no-pie lies at 0x400000: the payload goes in the low 2 GiB next to it, where its absolute
    // (R_X86_64_32S) table address fits. check must link exactly where apply then maps the blocks.
    [Fact]
    public void Check_links_where_apply_places_the_payload_even_next_to_a_non_pie_program()
    {
        using var worker = RunningTarget.Start("targets/worker.c", "-O2 -g -pthread -no-pie", "2");
        Assert.True(worker.ReadyAddress("compute") < 0x1000_0000, $"compute at 0x{worker.ReadyAddress("compute"):x}: not a -no-pie program");
        var payload = Payload.Load(TestPayloads.Build("live/apply/table.c", "-O2 -fno-pic", pic: false));
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var link = Assert.Single(patcher.Check(payload), r => r.Name == "link");
        var planned = Regex.Matches(link.Detail, @"(\w+) at 0x([0-9a-f]+)").Select(m => (m.Groups[1].Value, Convert.ToUInt64(m.Groups[2].Value, 16))).ToList();
        var applied = patcher.Apply(payload);

        Assert.Equal(planned, Assert.Single(patcher.List()).Memory.Select(b => (b.Use, b.Address)).ToList());
        Assert.All(planned, block => Assert.True(block.Item2 < 0x8000_0000, $"{block.Item1} at 0x{block.Item2:x}: not in the low 2 GiB"));
        Assert.Equal("compute_table", Assert.Single(applied.Functions).NewSymbol);
        worker.AssertValueBecomes("compute", 102);
    }
}
