using System.CommandLine;
using LivePatch.Live;
using LivePatch.Payloads;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch load | replace | unload | check</c>: the rest of a payload's life in a process.</summary>
internal static partial class LiveCommands
{
    public static Command Load()
    {
        var file = PayloadFileArgument();
        var command = new Command("load", "Upload and link a payload into a running process and make every check, without redirecting anything; apply it later by name.")
        {
            file,
        };
        var shared = PayloadCommandOptions.AddTo(command, checks: true);
        command.SetAction(parse => Run(cancellation =>
        {
            var payload = Payload.Load(parse.GetValue(file)!.FullName); // read and validated before the process is touched
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            var report = patcher.Load(payload);
            Console.WriteLine($"loaded {report.Payload} into {patcher.Pid}: {Functions(report.Functions)} ready; {report.Memory.Sum(b => (long)b.Size) / 1024} KiB mapped; apply it with: livepatch apply {patcher.Pid} {report.Payload}{(report.Copies.Any(c => c.IsMissed) ? " --allow-clones" : "")}");
            PrintAllowedCopies(report.Copies);
        }));
        return command;
    }

    public static Command Replace()
    {
        var file = PayloadFileArgument();
        var command = new Command("replace", "Revert every applied payload and apply a new one inside a single stop of every thread: no moment where neither is active.")
        {
            file,
        };
        var shared = PayloadCommandOptions.AddTo(command, timeout: true, consistency: true, checks: true);
        command.SetAction(parse => Run(cancellation =>
        {
            var payload = Payload.Load(parse.GetValue(file)!.FullName);
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            var report = patcher.Replace(payload);
            var reverted = report.Reverted.Count == 0 ? "nothing to revert" : $"reverted {string.Join(", ", report.Reverted)}";
            Console.WriteLine($"replaced in {patcher.Pid}: {reverted}, applied {report.Payload}: {Functions(report.Functions)}; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
            PrintAllowedCopies(report.Copies);
        }));
        return command;
    }

    public static Command Unload()
    {
        var name = new Argument<string>("name") { Description = "A loaded or reverted payload's name." };
        var command = new Command("unload", "Free the memory of a loaded or reverted payload once no thread runs its code or has it on its stack, and forget it.")
        {
            name,
        };
        var shared = PayloadCommandOptions.AddTo(command, timeout: true);
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            var report = patcher.Unload(parse.GetValue(name)!);
            Console.WriteLine($"unloaded {report.Payload} from {patcher.Pid}: {report.Memory.Sum(b => (long)b.Size) / 1024} KiB freed; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command Check()
    {
        var file = PayloadFileArgument();
        var command = new Command("check", "Make every check apply would make (object, symbols, relocations, build-ids, the bytes of every old function, deny list, dependencies) and write nothing to the process.")
        {
            file,
        };
        var shared = PayloadCommandOptions.AddTo(command, checks: true);
        command.SetAction(parse => Run(cancellation =>
        {
            var payload = Payload.Load(parse.GetValue(file)!.FullName);
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            foreach (var result in patcher.Check(payload))
                Console.WriteLine($"ok  {result.Name}: {result.Detail}");
        }));
        return command;
    }

    private static Argument<FileInfo> PayloadFileArgument() => new("payload") { Description = "The payload object (gcc -c -fPIC -ffunction-sections ...)." };

    // A payload argument names a file when one exists there or it looks like one; otherwise a payload in the process.
    private static bool IsObjectFile(string argument) =>
        File.Exists(argument) || argument.EndsWith(".o", StringComparison.Ordinal) || argument.Contains('/', StringComparison.Ordinal);
}
