using System.CommandLine;
using LivePatch.Cli.Commands;

var root = new RootCommand("""
    livepatch: patch the machine code of running x86-64 Linux processes.
    Each command's help lists its exit codes; docs/cli.md explains them.
    """)
{
    LiveCommands.Apply(),
    LiveCommands.Revert(),
    LiveCommands.List(),
    DemoCommand.Create(),
    SitesCommand.Create(),
    RunCommand.Create(),
    LiveCommands.Key(),
    LiveCommands.CallSites(),
    CpuCommand.Create(),
};
return root.Parse(args).Invoke();
