using System.Globalization;
using System.Text.Json;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Cli;

/// <summary>load, apply by name, replace, unload, check and list from separate livepatch runs.</summary>
[Collection(ProcessTests.Name)]
public class LifecycleCommandTests
{
    [Fact]
    public void A_payloads_life_from_separate_runs()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");
        var pid = worker.Pid.ToString(CultureInfo.InvariantCulture);
        var fix = TestPayloads.Build("live/apply/fix.c");
        var plus200 = TestPayloads.Build("live/lifecycle/plus200.c");

        var check = LivepatchCli.Run("check", pid, fix);
        Assert.Equal(0, check.ExitCode);
        Assert.Contains("ok  link: ", check.Output, StringComparison.Ordinal);
        Assert.Equal($"process {pid} has no payloads", LivepatchCli.Run("list", pid).Output.Trim());

        var load = LivepatchCli.Run("load", pid, fix);
        Assert.Equal(0, load.ExitCode);
        Assert.Contains($"apply it with: livepatch apply {pid} fix", load.Output, StringComparison.Ordinal);
        Assert.Equal("loaded", State(pid, "fix"));
        worker.AssertValueBecomes("compute", 3);

        Assert.Equal(0, LivepatchCli.Run("apply", pid, "fix", "--timeout", "2000").ExitCode);
        worker.AssertValueBecomes("compute", 102);

        var replace = LivepatchCli.Run("replace", pid, plus200, "--timeout", "2000");
        Assert.Equal(0, replace.ExitCode);
        Assert.Matches(@"^replaced in \d+: reverted fix, applied plus200: .*!compute -> compute_200; 5 threads stopped", replace.Output);
        worker.AssertValueBecomes("compute", 202);
        Assert.Equal("reverted", State(pid, "fix"));

        var unload = LivepatchCli.Run("unload", pid, "fix", "--timeout", "2000");
        Assert.Equal(0, unload.ExitCode);
        Assert.StartsWith("unloaded fix from ", unload.Output, StringComparison.Ordinal);
        var stillApplied = LivepatchCli.Run("unload", pid, "plus200");
        Assert.Equal(4, stillApplied.ExitCode);
        Assert.Equal($"livepatch: payload 'plus200' is applied to process {pid}: revert it before unloading it", stillApplied.Error.Trim());
        var unknown = LivepatchCli.Run("apply", pid, "nothing_here");
        Assert.Equal(4, unknown.ExitCode);
        Assert.Contains("has no payload 'nothing_here'", unknown.Error, StringComparison.Ordinal);
        Assert.Contains("'plus200' (applied)", LivepatchCli.Run("apply", pid, "nothing_here").Error, StringComparison.Ordinal);
    }

    private static string? State(string pid, string name)
    {
        var listed = LivepatchCli.Run("list", pid, "--json");
        using var json = JsonDocument.Parse(listed.Output);
        return json.RootElement.EnumerateArray().FirstOrDefault(p => p.GetProperty("name").GetString() == name) is { ValueKind: JsonValueKind.Object } payload
            ? payload.GetProperty("state").GetString() : null;
    }
}
