using System.CommandLine;

var root = new RootCommand("livepatch: patch the machine code of running x86-64 Linux processes.");
return root.Parse(args).Invoke();
