using System.Globalization;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// Copies of a replaced function's code that its entry jump does not reach: gcc's clones, other names of the same
/// body, copies inlined into callers. The target, tests/fixtures/live/clones/cloned.c, gets each from gcc 12.
/// </summary>
[Collection(ProcessTests.Name)]
public class ClonesTests
{
    /// <summary>-fipa-cp-clone is the cloning -O3 turns on: it gives scale its scale.constprop.0; -O2 alone splits lookup.</summary>
    public const string Flags = "-O2 -fipa-cp-clone -g";

    // scale(2, 3) and its clone's by_three(2): 2 + 4 + 6; once fixed, 2 * 1000 + 3.
    private const long Old = 12;
    private const long Fixed = 2003;

    private static RunningTarget StartCloned(string flags = Flags) => RunningTarget.Start("live/clones/cloned.c", flags);

    private static string Build(string name) => TestPayloads.Build($"live/clones/{name}.c");

    private static LivePatchOptions AllowingClones => new() { Timeout = Generous.Timeout, AllowClones = true };

    [Fact]
    public void A_payload_that_replaces_a_function_but_not_its_constprop_clone_is_refused_naming_the_clone()
    {
        using var target = StartCloned();
        var scale = target.ReadyAddress("scale");
        var clone = ClonesOf(target.Pid, "scale").Address;
        var before = TargetSnapshot.Take(target.Pid, scale, clone);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("scale_only")));
        var byCheck = Assert.Throws<PatchRefusedException>(() => patcher.Check(Payload.Load(Build("scale_only"))));
        var byLoad = Assert.Throws<PatchRefusedException>(() => patcher.Load(Build("scale_only")));

        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, error.Refusal);
        Assert.Matches($@"^payload 'scale_only' does not cover every copy of the code it replaces in process {target.Pid}: cloned-\w+!scale has clone cloned-\w+!scale\.constprop\.0 at 0x{clone:x}, not replaced: its callers keep running the old code; replace the clones too .*--allow-clones", error.Message);
        Assert.DoesNotContain('\n', error.Message);
        Assert.Equal(error.Message, byCheck.Message);
        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, byLoad.Refusal);
        before.AssertUnchanged();
        Assert.Empty(patcher.List());
        target.AssertValueBecomes("direct", Old);
    }

    [Fact]
    public void A_payload_that_replaces_the_function_and_its_clone_runs_the_new_code_on_both_paths()
    {
        using var target = StartCloned();
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        target.AssertValueBecomes("clone", Old);

        var check = patcher.Check(Payload.Load(Build("scale_both")));
        var report = patcher.Apply(Build("scale_both"));

        var line = Assert.Single(check, r => r.Name.EndsWith("!scale", StringComparison.Ordinal) && r.Name.StartsWith("copies of ", StringComparison.Ordinal));
        Assert.Matches(@"^has clone cloned-\w+!scale\.constprop\.0 at 0x[0-9a-f]+: replaced too; DWARF 5 of cloned-\w+ read", line.Detail);
        var reverse = Assert.Single(check, r => r.Name.StartsWith("copies of ", StringComparison.Ordinal) && r.Name.EndsWith("!scale.constprop.0", StringComparison.Ordinal));
        Assert.Matches($@"^is a clone of cloned-\w+!scale at 0x{target.ReadyAddress("scale"):x}: replaced too;", reverse.Detail);
        Assert.Contains(report.Functions, f => f.Name.EndsWith("!scale.constprop.0", StringComparison.Ordinal));
        Assert.All(report.Copies, c => Assert.True(c.Replaced, c.Describe()));
        Assert.Contains(report.Copies, c => c.Kind == FunctionCopyKind.Clone && c.Copy!.EndsWith("!scale.constprop.0", StringComparison.Ordinal));
        target.AssertValueBecomes("direct", Fixed);
        target.AssertValueBecomes("clone", Fixed);
    }

    [Fact]
    public void With_clones_allowed_the_function_alone_is_patched_and_the_clone_it_misses_is_reported()
    {
        using var target = StartCloned();
        using var patcher = LivePatcher.Attach(target.Pid, AllowingClones);

        var check = patcher.Check(Payload.Load(Build("scale_only")));
        var report = patcher.Apply(Build("scale_only"));

        Assert.Contains(check, r => r.Name.EndsWith("!scale", StringComparison.Ordinal)
            && r.Detail.Contains("!scale.constprop.0 at 0x", StringComparison.Ordinal)
            && r.Detail.Contains("not replaced: its callers keep running the old code, allowed (--allow-clones)", StringComparison.Ordinal));
        var missed = Assert.Single(report.Copies, c => c.IsMissed);
        Assert.Equal(FunctionCopyKind.Clone, missed.Kind);
        Assert.EndsWith("!scale.constprop.0", missed.Copy, StringComparison.Ordinal);
        Assert.Equal(ClonesOf(target.Pid, "scale").Address, missed.Address);
        // What the refusal warns of: the direct call runs the new code, the clone's caller still the old one.
        target.AssertValueBecomes("direct", Fixed);
        target.AssertValueBecomes("clone", Old);
    }

    [Fact]
    public void Applying_a_loaded_payload_by_name_checks_its_clones_again()
    {
        using var target = StartCloned();
        using (var allowing = LivePatcher.Attach(target.Pid, AllowingClones))
            allowing.Load(Build("scale_only"));
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);

        var error = Assert.Throws<PatchRefusedException>(() => patcher.ApplyLoaded("scale_only"));

        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, error.Refusal);
        Assert.Contains("!scale.constprop.0", error.Message, StringComparison.Ordinal);
        Assert.Equal(PayloadState.Loaded, Assert.Single(patcher.List()).State);
        target.AssertValueBecomes("direct", Old);
    }

    [Fact]
    public void A_function_with_an_alias_is_refused_naming_the_other_name()
    {
        using var target = StartCloned();
        var answer = target.ReadyAddress("answer");
        var before = TargetSnapshot.Take(target.Pid, answer);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("answer")));

        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, error.Refusal);
        Assert.Matches($@"cloned-\w+!answer is also named cloned-\w+!twin \(one body at 0x{answer:x}\), the jump changes it too; pass --allow-clones if that is intended$", error.Message);
        before.AssertUnchanged();
        target.AssertValueBecomes("twin", 42);
    }

    [Fact]
    public void With_clones_allowed_patching_an_aliased_body_changes_both_names()
    {
        using var target = StartCloned();
        using var patcher = LivePatcher.Attach(target.Pid, AllowingClones);

        var report = patcher.Apply(Build("answer"));

        Assert.Equal(FunctionCopyKind.Alias, Assert.Single(report.Copies, c => c.IsMissed).Kind);
        target.AssertValueBecomes("answer", 1001);
        target.AssertValueBecomes("twin", 1001);
    }

    [Fact]
    public void Two_names_of_one_body_cannot_both_be_replaced_even_with_clones_allowed()
    {
        using var target = StartCloned();
        var answer = target.ReadyAddress("answer");
        var before = TargetSnapshot.Take(target.Pid, answer);

        using var patcher = LivePatcher.Attach(target.Pid, AllowingClones);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("answer_twin")));

        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, error.Refusal);
        Assert.Matches($@"^payload 'answer_twin' replaces cloned-\w+!answer and cloned-\w+!twin, names of one body at 0x{answer:x} in process \d+: one jump cannot lead to two new functions", error.Message);
        before.AssertUnchanged();
    }

    [Fact]
    public void A_split_function_is_refused_naming_its_part_clone_and_the_callers_its_test_is_inlined_into()
    {
        using var target = StartCloned();
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var part = ClonesOf(target.Pid, "lookup");
        var first = Symbol(target.Pid, "lookup_first");
        var second = Symbol(target.Pid, "lookup_second");

        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("lookup")));

        Assert.Equal(LivePatchRefusal.ClonesNotReplaced, error.Refusal);
        Assert.Equal("lookup.part.0", part.Name);
        Assert.Contains($"!lookup has clone {part.Module.Name}!lookup.part.0 at 0x{part.Address:x}", error.Message, StringComparison.Ordinal);
        Assert.Matches($@"!lookup is inlined into cloned-\w+!lookup_first at 0x(?<at>[0-9a-f]+), not replaced: that caller keeps running the old code", error.Message);
        Assert.Contains($"!lookup is inlined into {second.Module.Name}!lookup_second at 0x", error.Message, StringComparison.Ordinal);
        Assert.Contains("replace the functions holding inlined copies", error.Message, StringComparison.Ordinal);
        var inlinedAt = ulong.Parse(System.Text.RegularExpressions.Regex.Match(error.Message, @"inlined into cloned-\w+!lookup_first at 0x(?<at>[0-9a-f]+)").Groups["at"].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        Assert.InRange(inlinedAt, first.Address, first.Address + first.Size - 1);
        target.AssertValueBecomes("lookup", 8);
    }

    [Fact]
    public void A_cold_part_is_listed_by_check_and_never_refused()
    {
        using var target = StartCloned();
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);

        var check = patcher.Check(Payload.Load(Build("checked")));
        var report = patcher.Apply(Build("checked"));

        var line = Assert.Single(check, r => r.Name.StartsWith("copies of ", StringComparison.Ordinal));
        Assert.Matches(@"^has split part cloned-\w+!checked\.cold at 0x[0-9a-f]+: run only from its own function; DWARF 5 of cloned-\w+ read: no inlined copy$", line.Detail);
        var cold = Assert.Single(report.Copies);
        Assert.Equal(FunctionCopyKind.SplitPart, cold.Kind);
        Assert.False(cold.IsMissed);
        target.AssertValueBecomes("checked", 503);
    }

    [Fact]
    public void Without_DWARF_the_clone_is_still_found_and_check_says_inlined_copies_were_not_looked_for()
    {
        using var target = StartCloned("-O2 -fipa-cp-clone");
        using var patcher = LivePatcher.Attach(target.Pid, AllowingClones);

        var check = patcher.Check(Payload.Load(Build("lookup")));

        var line = Assert.Single(check, r => r.Name.StartsWith("copies of ", StringComparison.Ordinal));
        Assert.Matches(@"^has clone cloned-\w+!lookup\.part\.0 at 0x[0-9a-f]+: not replaced: its callers keep running the old code, allowed \(--allow-clones\); no DWARF in cloned-\w+: inlined copies not looked for$", line.Detail);
    }

    [Fact]
    public void A_function_without_copies_gets_a_check_line_saying_so()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var check = patcher.Check(Payload.Load(TestPayloads.Build("live/apply/fix.c")));

        var line = Assert.Single(check, r => r.Name.StartsWith("copies of ", StringComparison.Ordinal));
        Assert.Matches(@"^no clone or alias in its symbols; DWARF 5 of worker-\w+ read: no inlined copy$", line.Detail);
    }

    [Fact]
    public void The_cli_refuses_in_one_line_and_with_allow_clones_applies_and_prints_what_it_let_through()
    {
        using var target = StartCloned();
        var pid = target.Pid.ToString(CultureInfo.InvariantCulture);
        var payload = Build("scale_only");

        var refused = LivepatchCli.Run("apply", pid, payload, "--timeout", "2000");
        var check = LivepatchCli.Run("check", pid, payload, "--allow-clones");
        var applied = LivepatchCli.Run("apply", pid, payload, "--timeout", "2000", "--allow-clones");

        Assert.Equal(4, refused.ExitCode);
        Assert.Single(refused.Error.Trim().Split('\n'));
        Assert.StartsWith("livepatch: payload 'scale_only' does not cover every copy", refused.Error, StringComparison.Ordinal);
        Assert.Equal(0, check.ExitCode);
        Assert.Matches(@"ok  copies of cloned-\w+!scale: has clone cloned-\w+!scale\.constprop\.0 at 0x[0-9a-f]+: not replaced: its callers keep running the old code, allowed \(--allow-clones\)", check.Output);
        Assert.Equal(0, applied.ExitCode);
        var lines = applied.Output.Trim().Split('\n');
        Assert.StartsWith("applied scale_only to ", lines[0], StringComparison.Ordinal);
        Assert.Matches(@"^  allowed \(--allow-clones\): cloned-\w+!scale has clone cloned-\w+!scale\.constprop\.0 at 0x[0-9a-f]+: not replaced: its callers keep running the old code$", lines[1]);
        target.AssertValueBecomes("direct", Fixed);
        target.AssertValueBecomes("clone", Old);
    }

    private static TargetSymbol Symbol(int pid, string name)
    {
        using var process = TargetProcess.Open(pid);
        return process.ResolveSymbol(name);
    }

    // The one clone gcc made of the function, as nm shows it.
    private static TargetSymbol ClonesOf(int pid, string name)
    {
        using var process = TargetProcess.Open(pid);
        return Assert.Single(process.MainModule.Symbols, s => s.IsFunction && s.Name.StartsWith(name + ".", StringComparison.Ordinal) && !s.Name.EndsWith(".cold", StringComparison.Ordinal));
    }
}
