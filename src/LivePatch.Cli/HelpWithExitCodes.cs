using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Text;

namespace LivePatch.Cli;

/// <summary>
/// The help of every command, followed by the exit codes: the whole table under <c>livepatch --help</c>, and one line
/// pointing there under a command's help (every command uses the same codes).
/// </summary>
internal sealed class HelpWithExitCodes(HelpAction help) : SynchronousCommandLineAction
{
    /// <summary>What a command's help says instead of the table.</summary>
    public const string SeeRootHelp = "Exit codes: see livepatch --help.";

    /// <summary>Makes the help option of <paramref name="root"/> (inherited by every command) end with the exit codes.</summary>
    public static void Install(RootCommand root)
    {
        var option = root.Options.OfType<HelpOption>().Single();
        option.Action = new HelpWithExitCodes((HelpAction)option.Action!);
    }

    public override int Invoke(ParseResult parseResult)
    {
        var code = help.Invoke(parseResult);
        var output = parseResult.InvocationConfiguration.Output;
        if (parseResult.CommandResult.Command is RootCommand)
            WriteTable(output);
        else
            output.WriteLine(SeeRootHelp);
        output.WriteLine();
        return code;
    }

    private void WriteTable(TextWriter output)
    {
        output.WriteLine("Exit codes (every command; docs/cli.md explains them):");
        foreach (var (code, meaning) in ExitCodes.Meanings)
        {
            var margin = $"  {code,3}  ";
            foreach (var line in Wrap(meaning, help.MaxWidth - margin.Length))
            {
                output.WriteLine(margin + line);
                margin = new string(' ', margin.Length);
            }
        }
    }

    // Lines of at most width characters, as the help above is wrapped to the terminal (a longer word stands alone).
    private static IEnumerable<string> Wrap(string text, int width)
    {
        var line = new StringBuilder();
        foreach (var word in text.Split(' '))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width)
            {
                yield return line.ToString();
                line.Clear();
            }
            line.Append(line.Length > 0 ? " " : "").Append(word);
        }
        yield return line.ToString();
    }
}
