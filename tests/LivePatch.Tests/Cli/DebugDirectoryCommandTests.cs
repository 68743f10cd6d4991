using System.Globalization;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Cli;

/// <summary><c>--debug-dir DIR</c>: the commands that resolve names in a process find a stripped module's debug file there.</summary>
[Collection(ProcessTests.Name)]
public class DebugDirectoryCommandTests
{
    [Fact]
    public void Symbols_and_apply_find_a_static_function_of_a_stripped_program_through_debug_dir()
    {
        var (stripped, debug, directory) = DebugFileTests.Split("cli");
        var root = Path.Combine(directory, "root");
        var place = DebugFileTests.UnderBuildId(root, stripped, debug);
        using var worker = RunningTarget.StartExecutable(stripped, "1");
        var pid = worker.Pid.ToString(CultureInfo.InvariantCulture);
        var payload = TestPayloads.Build("live/apply/secret.c");

        var without = LivepatchCli.Run("check", pid, payload);
        var symbolsWithout = LivepatchCli.Run("symbols", pid, "secret");
        var symbols = LivepatchCli.Run("symbols", pid, "secret", "--debug-dir", root);
        var apply = LivepatchCli.Run("apply", pid, payload, "--debug-dir", Path.Combine(directory, "empty-but-there"), "--debug-dir", root);

        Assert.Equal(3, without.ExitCode);
        Assert.Contains("cli is stripped and no debug file of it was found", without.Error, StringComparison.Ordinal);
        Assert.Contains("cli is stripped and no debug file was found for it (looked for", symbolsWithout.Output, StringComparison.Ordinal);
        Assert.Equal(0, symbols.ExitCode);
        Assert.Matches($@"cli!secret\s*│\s*0x{worker.ReadyAddress("secret"):x}\s*│.*debug file {System.Text.RegularExpressions.Regex.Escape(place)}", symbols.Output.ReplaceLineEndings(" "));
        Assert.Equal(3, apply.ExitCode); // the first directory does not exist
        Assert.Contains("debug directory", apply.Error, StringComparison.Ordinal);
        Directory.CreateDirectory(Path.Combine(directory, "empty-but-there"));
        apply = LivepatchCli.Run("apply", pid, payload, "--debug-dir", Path.Combine(directory, "empty-but-there"), "--debug-dir", root, "--timeout", "2000");
        Assert.True(apply.ExitCode == 0, apply.Error);
        worker.AssertValueBecomes("secret", 71);
        Assert.Equal(0, LivepatchCli.Run("revert", pid, "secret", "--timeout", "2000").ExitCode);
        worker.AssertValueBecomes("secret", 8);
    }

    [Fact]
    public void A_missing_debug_dir_is_an_input_error_for_every_command_that_resolves_names()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var pid = worker.Pid.ToString(CultureInfo.InvariantCulture);
        var payload = TestPayloads.Build("live/apply/secret.c");
        var missing = Path.Combine(ExternalTool.ScratchDirectory("debugdir"), "missing");

        foreach (var arguments in new[]
                 {
                     new[] { "symbols", pid, "secret" }, ["check", pid, payload], ["load", pid, payload], ["apply", pid, payload],
                     ["replace", pid, payload], ["run", "--payload", payload, "--", "/bin/true"],
                 })
        {
            var result = LivepatchCli.Run([arguments[0], "--debug-dir", missing, .. arguments[1..]]);
            Assert.True(result.ExitCode == 3, $"{arguments[0]}: exit {result.ExitCode}: {result.Error}");
            Assert.Contains($"debug directory '{missing}' does not exist", result.Error, StringComparison.Ordinal);
        }
        Assert.Contains("has no payloads", LivepatchCli.Run("list", pid).Output, StringComparison.Ordinal);
    }
}
