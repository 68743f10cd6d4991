using System.CommandLine;
using LivePatch.Live;
using LivePatch.Sites;
using LivePatch.Targets;

namespace LivePatch.Cli.Commands;

/// <summary>
/// <c>livepatch run [--alternatives] [--payload FILE.o ...] -- PROGRAM ARGS</c>: the boot path. Starts the program,
/// holds it at its entry point (libraries mapped, none of its code run), applies its sites and the payloads, lets it
/// run and exits with its status.
/// </summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var program = new Argument<string[]>("program") { Description = "The program and its arguments (after --).", Arity = ArgumentArity.OneOrMore };
        var alternatives = new Option<bool>("--alternatives")
        {
            Description = "Apply every module's build-time sites for this CPU and situation: alternatives, call sites (native patchlets or direct calls), and lock prefixes dropped while only one thread can run.",
        };
        var payloads = new Option<FileInfo[]>("--payload") { Description = "A payload object to apply before the program runs; repeat for several, applied in order.", AllowMultipleArgumentsPerToken = false };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Print nothing but errors." };
        var debugDirectories = PayloadCommandOptions.DebugDirectoryOption();
        var command = new Command("run", """
            Start a program, stop it at its entry point once the dynamic loader has mapped its libraries, apply sites and payloads, then let it run.
            livepatch exits with the program's status once it ends (its exit code, or 128 + the signal that killed it); before the program runs, with its own codes, and the program is ended without having run.
            """)
        {
            program, alternatives, payloads, quiet, debugDirectories,
        };
        var shared = SiteCommandOptions.ForRunCommand();
        command.SetAction(parse =>
        {
            var words = parse.GetValue(program)!;
            var say = parse.GetValue(quiet) ? (Action<string>)(_ => { }) : line => Console.Error.WriteLine($"livepatch: {line}");
            using var interruption = new Interruption();
            LaunchedProgram launched;
            LivePatchOptions patcherOptions;
            try
            {
                patcherOptions = shared.ToLivePatchOptions(parse, PayloadCommandOptions.DebugDirectories(parse, debugDirectories), interruption.Token);
                launched = ProgramLauncher.Launch(words[0], words[1..]);
            }
            catch (Exception error)
            {
                return Failure.Report(error);
            }
            using (launched)
            {
                var sites = new SitePatcher(launched.Process, shared.ToSitePatcherOptions(parse, pid: null, interruption.Token));
                try
                {
                    if (parse.GetValue(alternatives))
                        ApplySites(sites, say);
                    var patcher = new LivePatcher(launched.Process, patcherOptions);
                    foreach (var payload in parse.GetValue(payloads) ?? [])
                    {
                        var report = patcher.Apply(payload.FullName);
                        say($"applied {report.Payload}: {string.Join(", ", report.Functions.Select(f => $"{f.Name} -> {f.NewSymbol}"))}");
                    }
                    interruption.Token.ThrowIfCancellationRequested();
                }
                catch (OperationCanceledException) when (interruption.Requested)
                {
                    Console.Error.WriteLine($"livepatch: interrupted before {words[0]} ran; it was ended");
                    return ExitCodes.Interrupted;
                }
                catch (Exception error)
                {
                    var code = Failure.Report(error);
                    Console.Error.WriteLine($"livepatch: {words[0]} was ended before it ran");
                    return code;
                }

                launched.Start(sites.IsWatchingLockPrefixes ? token => sites.WatchLockPrefixes(token).Reason : null);
                // Ctrl-C reaches the program too (same process group): stop watching, keep waiting for it to end.
                using var stopWatching = interruption.Token.Register(() => _ = launched.StopWatchingAsync());
                var status = launched.WaitForExitAsync().GetAwaiter().GetResult();
                try
                {
                    if (launched.Watch.GetAwaiter().GetResult() is { } watched)
                        say(watched);
                }
                catch (LivePatchException error)
                {
                    say($"lock-prefix watch ended: {error.Message}");
                }
                return status;
            }
        });
        return command;
    }

    // Every module's sites in one stop of the (held) program.
    private static void ApplySites(SitePatcher patcher, Action<string> say)
    {
        var report = patcher.ApplySites();
        foreach (var module in report.Modules)
        {
            if (module.AlternativesChosen > 0)
                say($"{module.Module}: {module.AlternativesWritten} of {module.AlternativesChosen} chosen alternatives rewritten");
            if (module.CallSites > 0)
                say($"{module.Module}: {module.CallSitesWritten} of {module.CallSites} call sites rewritten");
        }
        if (report.LockPrefixes > 0)
            say(report.LockPrefixesDropped ? $"{report.LockPrefixes} lock prefixes dropped: {report.LockReason}" : $"{report.LockPrefixes} lock prefixes {report.LockReason}");
        say($"{report.Written} sites written in one stop ({LiveCommands.Micro(report.Pause)})");
    }
}
