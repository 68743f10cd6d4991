using System.CommandLine;
using LivePatch.Cli.Commands;

var root = new RootCommand("""
    livepatch: patch the machine code of running x86-64 Linux processes.
    Exit codes: 0 success, 1 usage error; each command's help lists its own.
    """)
{
    CpuCommand.Create(),
};
return root.Parse(args).Invoke();
