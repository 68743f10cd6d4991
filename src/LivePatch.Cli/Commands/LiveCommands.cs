using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using LivePatch.Live;
using LivePatch.Sites;
using Spectre.Console;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch apply | revert | list</c>: live patches of a running process.</summary>
internal static partial class LiveCommands
{
    public static Command Apply()
    {
        var pid = PidArgument();
        var file = new Argument<string>("payload")
        {
            Description = "A payload object (gcc -c -fPIC -ffunction-sections ...) to load and apply, or the name of a payload loaded or reverted earlier.",
        };
        var timeout = TimeoutOption();
        var consistency = ConsistencyOption();
        var (force, deny) = (ForceOption(), DenyOption());
        var command = new Command("apply", $"Redirect the functions of a payload to its new code, with every thread stopped: a payload object (loaded first), or a payload loaded or reverted earlier, by name.\n{ExitCodes.Help}")
        {
            pid, file, timeout, consistency, force, deny,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(parse.GetValue(timeout), parse.GetValue(consistency), parse.GetValue(force), parse.GetValue(deny), cancellation));
            var argument = parse.GetValue(file)!;
            var report = IsObjectFile(argument) ? patcher.Apply(Path.GetFullPath(argument)) : patcher.ApplyLoaded(argument);
            Console.WriteLine($"applied {report.Payload} to {patcher.Pid}: {Functions(report.Functions)}; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command Revert()
    {
        var pid = PidArgument();
        var name = new Argument<string>("name") { Description = "The payload's name: its file name without extension." };
        var timeout = TimeoutOption();
        var consistency = ConsistencyOption();
        var command = new Command("revert", $"Restore the original code of the functions an applied payload replaced, with every thread stopped.\n{ExitCodes.Help}")
        {
            pid, name, timeout, consistency,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = LivePatcher.Attach(parse.GetValue(pid), Options(parse.GetValue(timeout), parse.GetValue(consistency), cancellation));
            var report = patcher.Revert(parse.GetValue(name)!);
            Console.WriteLine($"reverted {report.Payload} in {patcher.Pid}: {Functions(report.Functions)} restored; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
        }));
        return command;
    }

    public static Command Key()
    {
        var pid = PidArgument();
        var name = new Argument<string>("name") { Description = "The static key's name, as given to LP_STATIC_BRANCH." };
        var state = new Argument<string>("state") { Description = "on: every site jumps to its on path; off: every site is a NOP again." };
        state.AcceptOnlyFromAmong("on", "off");
        var module = new Option<string?>("--module") { Description = "The module whose sites to switch (default: the main program)." };
        var timeout = TimeoutOption();
        var command = new Command("key", $"Switch a static key of a running process on or off: all its LP_STATIC_BRANCH sites in one stop.\n{ExitCodes.Help}")
        {
            pid, name, state, module, timeout,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = SitePatcher.Attach(parse.GetValue(pid), SiteOptions(parse.GetValue(pid), parse.GetValue(timeout), cancellation));
            var report = patcher.SetStaticKey(parse.GetValue(name)!, parse.GetValue(state) == "on", parse.GetValue(module));
            Console.WriteLine(report.Written == 0
                ? $"static key {report.Key} in {patcher.Pid} is already {(report.Enabled ? "on" : "off")} ({report.Sites} sites)"
                : $"static key {report.Key} in {patcher.Pid} is {(report.Enabled ? "on" : "off")}: {report.Written} of {report.Sites} sites written; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}");
        }));
        return command;
    }

    public static Command CallSites()
    {
        var pid = PidArgument();
        var module = new Option<string?>("--module") { Description = "The module whose call sites to rewrite (default: the main program)." };
        var restore = new Option<bool>("--restore") { Description = "Put the indirect call back in every call site instead." };
        var backend = new Option<string>("--backend")
        {
            Description = "native: built-in patchlets where the slot holds their function, else direct; direct: direct calls, NOPs, ud2 only.",
            DefaultValueFactory = _ => "native",
        };
        backend.AcceptOnlyFromAmong("native", "direct");
        var timeout = TimeoutOption();
        var command = new Command("callsites", $"Rewrite the LP_CALLSITE sites of a running process from the functions their ops slots hold now (inline patchlet, direct call, NOPs, ud2), all in one stop; or restore their indirect calls.\n{ExitCodes.Help}")
        {
            pid, module, restore, backend, timeout,
        };
        command.SetAction(parse => Run(cancellation =>
        {
            using var patcher = SitePatcher.Attach(parse.GetValue(pid), SiteOptions(parse.GetValue(pid), parse.GetValue(timeout), cancellation));
            var restoring = parse.GetValue(restore);
            var report = restoring
                ? patcher.RestoreCallSites(parse.GetValue(module))
                : patcher.ApplyCallSites(parse.GetValue(backend) == "direct" ? CallSiteBackend.Direct : CallSiteBackend.Default, parse.GetValue(module));
            var what = restoring ? "indirect calls restored" : $"{report.Changed} of {report.Sites} rewritten";
            Console.WriteLine(report.Written == 0
                ? $"call sites of {report.Module} in {patcher.Pid}: {what} already ({report.Sites} sites)"
                : $"call sites of {report.Module} in {patcher.Pid}: {what}, {report.Written} written; {report.ThreadsStopped} threads stopped, pause {Micro(report.Pause)}{Attempts(report.Attempts)}");
            if (!restoring)
                foreach (var choice in report.Choices)
                    Console.WriteLine($"  {choice.Name}: {choice.Reason}");
        }));
        return command;
    }

    public static Command List()
    {
        var pid = PidArgument();
        var json = new Option<bool>("--json") { Description = "Print the record as JSON." };
        var command = new Command("list", $"Show the payloads recorded in a process: state (loaded, applied, reverted), functions (old -> new), build-ids, applied at, pause. Needs no ptrace.\n{ExitCodes.Help}")
        {
            pid, json,
        };
        command.SetAction(parse => Run(_ =>
        {
            var payloads = LivePatcher.List(parse.GetValue(pid));
            RecoverCommand.ShowInterrupted(parse.GetValue(pid), toError: parse.GetValue(json));
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(payloads, ListJson));
                return;
            }
            if (payloads.Count == 0)
            {
                Console.WriteLine($"process {parse.GetValue(pid)} has no payloads");
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
                Markup.Escape(string.Join("\n", payload.Functions.Select(f => $"{f.Name} 0x{f.OldAddress:x} -> {f.NewSymbol} 0x{f.NewAddress:x}"))),
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

    private static Argument<int> PidArgument() => new("pid") { Description = "The target process id." };

    private static Option<int> TimeoutOption() => new("--timeout")
    {
        Description = "Milliseconds to wait for every thread to stop and out of the patched code (default 30, as Xen).",
        DefaultValueFactory = _ => 30,
    };

    private static LivePatchOptions Options(int timeoutMilliseconds, CancellationToken cancellation) =>
        new() { Timeout = TimeSpan.FromMilliseconds(Math.Max(1, timeoutMilliseconds)), Cancellation = cancellation, Checkpoint = KillAtStep.FromEnvironment() };

    /// <summary>Options for the site commands: no site changes while a payload action waits for recover.</summary>
    internal static SitePatcherOptions SiteOptions(int pid, int timeoutMilliseconds, CancellationToken cancellation) => new()
    {
        Timeout = TimeSpan.FromMilliseconds(Math.Max(1, timeoutMilliseconds)),
        Cancellation = cancellation,
        BeforeChange = () => LivePatcher.RefuseWhileInterrupted(pid),
    };

    private static string Functions(IEnumerable<AppliedFunctionInfo> functions) =>
        string.Join(", ", functions.Select(f => $"{f.Name} -> {f.NewSymbol}"));

    private static string Attempts(int attempts) => attempts > 1 ? $" ({attempts} attempts)" : "";
}
