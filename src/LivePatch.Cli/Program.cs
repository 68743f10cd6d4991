using System.CommandLine;
using LivePatch.Cli;
using LivePatch.Cli.Commands;

var root = new RootCommand("livepatch: patch the machine code of running x86-64 Linux processes.")
{
    LiveCommands.Load(),
    LiveCommands.Apply(),
    LiveCommands.Revert(),
    LiveCommands.Replace(),
    LiveCommands.Unload(),
    LiveCommands.Check(),
    LiveCommands.List(),
    RecoverCommand.Create(),
    DemoCommand.Create(),
    SitesCommand.Create(),
    RunCommand.Create(),
    KeyCommand.Create(),
    CallSitesCommand.Create(),
    CpuCommand.Create(),
    SymbolsCommand.Create(),
};
HelpWithExitCodes.Install(root);
// Piped or redirected, Spectre.Console assumes 80 columns and folds every table cell (a log or a pager has room),
// and with TERM set it would still write colour escapes into the file.
if (Console.IsOutputRedirected)
{
    Spectre.Console.AnsiConsole.Profile.Width = 240;
    Spectre.Console.AnsiConsole.Profile.Capabilities.Ansi = false;
}
var parse = root.Parse(args);
// Errors with --help or --version still show those; otherwise the error action would print the help text too.
if (parse.Errors.Count > 0 && args.Length > 0 && parse.Action is System.CommandLine.Invocation.ParseErrorAction)
{
    // One line, as for every other failure: the first error and where the command's options are listed.
    Console.Error.WriteLine($"livepatch: {UsageErrors.Describe(parse)}");
    return ExitCodes.Usage;
}
return parse.Invoke();
