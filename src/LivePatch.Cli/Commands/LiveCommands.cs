using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Sites;
using Spectre.Console;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch apply | revert | list</c>: live patches of a running process.</summary>
internal static partial class LiveCommands
{
    public static Command Apply()
    {
        var file = new Argument<string>("payload")
        {
            Description = "A payload object (gcc -c -fPIC -ffunction-sections ...) to load and apply, or the name of a payload loaded or reverted earlier.",
        };
        var command = new Command("apply", "Redirect the functions of a payload to its new code, with every thread stopped: a payload object (loaded first), or a payload loaded or reverted earlier, by name.")
        {
            file,
        };
        var shared = PayloadCommandOptions.AddTo(command, timeout: true, consistency: true, checks: true);
        command.SetAction(parse => Run(cancellation =>
        {
            var argument = parse.GetValue(file)!;
            // A payload object is read and validated before the process is touched.
            var payload = IsObjectFile(argument) ? Payload.Load(Path.GetFullPath(argument)) : null;
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            var report = payload is not null ? patcher.Apply(payload) : patcher.ApplyLoaded(argument);
            Console.WriteLine($"applied {report.Payload} to {patcher.Pid}: {Functions(report.Functions)}; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
            PrintAllowedCopies(report.Copies);
        }));
        return command;
    }

    public static Command Revert()
    {
        var name = new Argument<string>("name") { Description = "The payload's name: its file name without extension." };
        var command = new Command("revert", "Restore the original code of the functions an applied payload replaced, with every thread stopped.")
        {
            name,
        };
        var shared = PayloadCommandOptions.AddTo(command, timeout: true, consistency: true);
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(shared.Pid(parse), shared.ToLivePatchOptions(parse, cancellation));
            var report = patcher.Revert(parse.GetValue(name)!);
            Console.WriteLine($"reverted {report.Payload} in {patcher.Pid}: {Functions(report.Functions)} restored; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command List()
    {
        var json = new Option<bool>("--json") { Description = "Print the record as JSON." };
        var command = new Command("list", "Show the payloads recorded in a process: state (loaded, applied, reverted), functions (old -> new), build-ids, applied at, pause. Needs no ptrace.")
        {
            json,
        };
        var shared = PayloadCommandOptions.AddTo(command);
        command.SetAction(parse => Run(_ =>
        {
            var pid = shared.Pid(parse);
            var payloads = LivePatcher.List(pid);
            RecoverCommand.ShowInterrupted(pid, toError: parse.GetValue(json));
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(payloads, ListJson));
                return;
            }
            if (payloads.Count == 0)
            {
                Console.WriteLine($"process {pid} has no payloads");
                return;
            }
            Print(payloads);
        }));
        return command;
    }

    internal static void Print(IReadOnlyList<AppliedPayloadInfo> payloads)
    {
        var table = new Table().AddColumns("payload", "state", "functions (old -> new)", "build-ids", "applied at (UTC)", "pause");
        foreach (var payload in payloads)
            table.AddRow(
                Markup.Escape(payload.Name),
                payload.State switch { PayloadState.Applied => "[green]applied[/]", PayloadState.Loaded => "[yellow]loaded[/]", _ => "[grey]reverted[/]" },
                Markup.Escape(string.Join("\n", payload.Functions.Select(f => $"{f.Name} 0x{f.OldAddress:x} -> {f.NewSymbol} 0x{f.NewAddress:x}{Thunks.Describe(f)}"))),
                Markup.Escape(payload.BuildIds.Count == 0 ? "-" : string.Join("\n", payload.BuildIds.Select(b => $"{b.Module} {b.Actual}{(b.Forced ? $" (forced; built for {b.Expected})" : "")}"))),
                payload.AppliedAt?.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "-",
                payload.State == PayloadState.Loaded ? "-" : $"{payload.PauseMicroseconds:0} µs");
        AnsiConsole.Write(table);
    }

    internal static string Micro(TimeSpan pause) => $"{pause.TotalMicroseconds:0} µs";

    internal static int Run(Action<CancellationToken> action)
    {
        using var interruption = new Interruption();
        try
        {
            action(interruption.Token);
        }
        catch (OperationCanceledException error) when (interruption.Requested)
        {
            Console.Error.WriteLine($"livepatch: interrupted: {error.Message}");
            return ExitCodes.Interrupted;
        }
        catch (Exception error)
        {
            return Failure.Report(error);
        }
        if (interruption.Requested)
        {
            Console.Error.WriteLine("livepatch: interrupted (the action in progress was completed first)");
            return ExitCodes.Interrupted;
        }
        return ExitCodes.Success;
    }

    private static readonly JsonSerializerOptions ListJson = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    private static string Functions(IEnumerable<AppliedFunctionInfo> functions) =>
        string.Join(", ", functions.Select(f => $"{f.Name} -> {f.NewSymbol}{Thunks.Describe(f)}"));

    internal static string Attempts(int attempts) => attempts > 1 ? $" ({attempts} attempts)" : "";

    // What --allow-clones let through: each copy that stays old or changes with the function, one line each.
    internal static void PrintAllowedCopies(IEnumerable<FunctionCopy> copies)
    {
        foreach (var copy in copies.Where(c => c.IsMissed))
            Console.WriteLine($"  allowed (--allow-clones): {copy.Describe()}: {copy.Consequence()}");
    }
}
