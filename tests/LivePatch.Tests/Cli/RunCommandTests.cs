using System.Diagnostics;
using System.Globalization;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;

namespace LivePatch.Tests.Cli;

/// <summary><c>livepatch run</c>: sites and payloads are in place before the program's first instruction.</summary>
[Collection(ProcessTests.Name)]
public class RunCommandTests
{
    private static string Program => RunningTarget.Build("sites/boot_target.c", TestTargets.SitesFlags);

    [Fact]
    public void Alternatives_lock_prefixes_and_payloads_are_in_place_before_the_program_runs_and_its_status_is_returned()
    {
        var fix = TestPayloads.Build("sites/boot_fix.c");

        var result = LivepatchCli.Run("run", "--alternatives", "--payload", fix, "--", Program, "7");

        Assert.Equal(7, result.ExitCode);
        Assert.Equal("bits=8 answer=42 lock=3e", result.Output.Trim());
        Assert.Contains("livepatch: boot_target", result.Error, StringComparison.Ordinal);
        Assert.Contains("1 of 1 chosen alternatives rewritten", result.Error, StringComparison.Ordinal);
        Assert.Contains("1 lock prefixes dropped: one thread", result.Error, StringComparison.Ordinal);
        Assert.Contains("applied boot_fix: boot_target", result.Error, StringComparison.Ordinal);
        Assert.Contains("exited", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_options_the_program_runs_as_built()
    {
        var result = LivepatchCli.Run("run", "--quiet", "--", Program);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("bits=255 answer=41 lock=f0", result.Output.Trim());
        Assert.Equal("", result.Error);
    }

    [Fact]
    public void A_program_found_in_path_gets_its_arguments_and_a_signal_death_is_128_plus_the_signal()
    {
        var result = LivepatchCli.Run("run", "--", "sh", "-c", "echo \"$0 $1\"; kill -TERM $$", "one two", "three");

        Assert.Equal(128 + 15, result.ExitCode);
        Assert.Equal("one two three", result.Output.Trim());
    }

    [Fact]
    public void A_payload_that_cannot_be_linked_ends_the_program_before_it_runs()
    {
        var bad = TestPayloads.Build("sites/boot_bad.c");

        var result = LivepatchCli.Run("run", "--payload", bad, "--", Program);

        Assert.Equal(3, result.ExitCode);
        Assert.Equal("", result.Output);
        Assert.Contains("no_such_function", result.Error, StringComparison.Ordinal);
        Assert.Contains("was ended before it ran", result.Error, StringComparison.Ordinal);
        Assert.Empty(Leftovers(Program));
    }

    [Fact]
    public void A_missing_program_is_one_line_and_exit_3()
    {
        var result = LivepatchCli.Run("run", "--", "/nonexistent/program");

        Assert.Equal(3, result.ExitCode);
        Assert.Equal("livepatch: no program /nonexistent/program", result.Error.Trim());
    }

    private static List<int> Leftovers(string program) =>
        [.. Process.GetProcesses().Where(p => SafeExecutable(p) == program).Select(p => p.Id)];

    private static string? SafeExecutable(Process process)
    {
        try
        {
            return File.ResolveLinkTarget($"/proc/{process.Id.ToString(CultureInfo.InvariantCulture)}/exe", false)?.FullName;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
