using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using LivePatch.Cli;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Cli;

/// <summary>The exit codes are listed once, by <c>livepatch --help</c> and docs/cli.md, and both list every code there is.</summary>
[Collection(ProcessTests.Name)]
public class ExitCodeHelpTests
{
    [Fact]
    public void The_root_help_lists_every_exit_code_once()
    {
        var help = LivepatchCli.Run("--help").Output;

        var table = help[help.IndexOf("Exit codes", StringComparison.Ordinal)..];
        var listed = Regex.Matches(table, @"^ +(\d+)  \S", RegexOptions.Multiline).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        Assert.Equal(Defined(), listed.Order());
        Assert.Single(Regex.Matches(help, "Exit codes"));
    }

    [Fact]
    public void Docs_cli_md_lists_every_exit_code_once()
    {
        var docs = File.ReadAllText(DocsCli());

        var start = docs.IndexOf("## Exit codes", StringComparison.Ordinal);
        var section = docs[start..docs.IndexOf("\n## ", start + 1, StringComparison.Ordinal)];
        var listed = Regex.Matches(section, @"^\| (\d+) \|", RegexOptions.Multiline).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        Assert.Equal(Defined(), listed.Order());
    }

    [Fact]
    public void Every_command_points_to_the_root_help_instead_of_repeating_the_exit_codes()
    {
        var commands = Commands(LivepatchCli.Run("--help").Output);
        Assert.Contains("apply", commands);
        Assert.Contains("cpu", commands);

        foreach (var command in commands)
        {
            var help = LivepatchCli.Run(command, "--help").Output;
            Assert.Contains(HelpWithExitCodes.SeeRootHelp, help, StringComparison.Ordinal);
            Assert.Single(Regex.Matches(help, "Exit codes"));
            foreach (var (_, meaning) in ExitCodes.Meanings)
                Assert.DoesNotContain(meaning, help, StringComparison.Ordinal);
        }
    }

    // Every code the CLI defines, so that a new one fails these tests until the help and the docs list it.
    private static List<int> Defined() =>
        [.. typeof(ExitCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.IsLiteral && f.FieldType == typeof(int))
            .Select(f => (int)f.GetRawConstantValue()!)
            .Order()];

    // The first word of each line under "Commands:" in the root help.
    private static List<string> Commands(string rootHelp) =>
        [.. rootHelp[(rootHelp.IndexOf("Commands:", StringComparison.Ordinal) + "Commands:".Length)..]
            .Split('\n')
            .Skip(1)
            .TakeWhile(line => line.Trim().Length > 0)
            .Where(line => line.StartsWith("  ", StringComparison.Ordinal) && !char.IsWhiteSpace(line[2]))
            .Select(line => line.Trim().Split(' ')[0])];

    // The tests run from the build output, inside the clone.
    private static string DocsCli()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            var path = Path.Combine(directory.FullName, "docs", "cli.md");
            if (File.Exists(path))
                return path;
        }
        throw new FileNotFoundException($"no docs/cli.md above {AppContext.BaseDirectory}");
    }
}
