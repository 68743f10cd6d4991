using System.CommandLine;
using LivePatch.Live;
using LivePatch.Payloads;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch load | replace | unload | check</c>: the rest of a payload's life in a process.</summary>
internal static partial class LiveCommands
{
    public static Command Load()
    {
        var pid = PidArgument();
        var file = PayloadFileArgument();
        var (force, deny) = (ForceOption(), DenyOption());
        var command = new Command("load", $"Upload and link a payload into a running process and make every check, without redirecting anything; apply it later by name.\n{ExitCodes.Help}")
        {
            pid, file, force, deny,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(30, null, parse.GetValue(force), parse.GetValue(deny), cancellation));
            var report = patcher.Load(parse.GetValue(file)!.FullName);
            Console.WriteLine($"loaded {report.Payload} into {patcher.Pid}: {Functions(report.Functions)} ready; {report.Memory.Sum(b => (long)b.Size) / 1024} KiB mapped; apply it with: livepatch apply {patcher.Pid} {report.Payload}");
        }));
        return command;
    }

    public static Command Replace()
    {
        var pid = PidArgument();
        var file = PayloadFileArgument();
        var timeout = TimeoutOption();
        var consistency = ConsistencyOption();
        var (force, deny) = (ForceOption(), DenyOption());
        var command = new Command("replace", $"Revert every applied payload and apply a new one inside a single stop of every thread: no moment where neither is active.\n{ExitCodes.Help}")
        {
            pid, file, timeout, consistency, force, deny,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(parse.GetValue(timeout), parse.GetValue(consistency), parse.GetValue(force), parse.GetValue(deny), cancellation));
            var report = patcher.Replace(Payload.Load(parse.GetValue(file)!.FullName));
            var reverted = report.Reverted.Count == 0 ? "nothing to revert" : $"reverted {string.Join(", ", report.Reverted)}";
            Console.WriteLine($"replaced in {patcher.Pid}: {reverted}, applied {report.Payload}: {Functions(report.Functions)}; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command Unload()
    {
        var pid = PidArgument();
        var name = new Argument<string>("name") { Description = "A loaded or reverted payload's name." };
        var timeout = TimeoutOption();
        var command = new Command("unload", $"Free the memory of a loaded or reverted payload once no thread runs its code or has it on its stack, and forget it.\n{ExitCodes.Help}")
        {
            pid, name, timeout,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(parse.GetValue(timeout), cancellation));
            var report = patcher.Unload(parse.GetValue(name)!);
            Console.WriteLine($"unloaded {report.Payload} from {patcher.Pid}: {report.Memory.Sum(b => (long)b.Size) / 1024} KiB freed; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command Check()
    {
        var pid = PidArgument();
        var file = PayloadFileArgument();
        var (force, deny) = (ForceOption(), DenyOption());
        var command = new Command("check", $"Make every check apply would make (object, symbols, relocations, build-ids, the bytes of every old function, deny list, dependencies) and write nothing to the process.\n{ExitCodes.Help}")
        {
            pid, file, force, deny,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(30, null, parse.GetValue(force), parse.GetValue(deny), cancellation));
            foreach (var result in patcher.Check(Payload.Load(parse.GetValue(file)!.FullName)))
                Console.WriteLine($"ok  {result.Name}: {result.Detail}");
        }));
        return command;
    }

    private static Argument<FileInfo> PayloadFileArgument() => new("payload") { Description = "The payload object (gcc -c -fPIC -ffunction-sections ...)." };

    private static Option<bool> ForceOption() => new("--force")
    {
        Description = "Go on when a module's build-id differs from the one the payload was built against (LIVEPATCH_TARGET_BUILD_ID); the record says it was forced.",
    };

    private static Option<string[]> DenyOption() => new("--deny")
    {
        Description = "A function never to patch (name or module!name); repeat for several.",
        AllowMultipleArgumentsPerToken = false,
    };

    // A payload argument names a file when one exists there or it looks like one; otherwise a payload in the process.
    private static bool IsObjectFile(string argument) =>
        File.Exists(argument) || argument.EndsWith(".o", StringComparison.Ordinal) || argument.Contains('/', StringComparison.Ordinal);

    private static LivePatchOptions Options(int timeoutMilliseconds, string? consistency, bool force, string[]? deny, CancellationToken cancellation)
    {
        var options = Options(timeoutMilliseconds, consistency, cancellation);
        return new LivePatchOptions
        {
            Timeout = options.Timeout,
            Cancellation = options.Cancellation,
            Checkpoint = options.Checkpoint,
            Consistency = options.Consistency,
            Force = force,
            Deny = deny ?? [],
        };
    }
}
