using System.CommandLine;
using LivePatch.Live;
using LivePatch.Sites;

namespace LivePatch.Cli.Commands;

/// <summary>
/// The process argument and the options that the site commands (sites, key, callsites, run) share, defined once: a
/// command adds those it takes with one of the <c>AddTo</c> methods, and <see cref="ToLivePatchOptions"/> turns what was
/// given into the options the library needs.
/// </summary>
internal sealed class SiteCommandOptions
{
    // run takes no --timeout: the program it starts is held at its entry point, none of its own code run yet.
    private static readonly TimeSpan LaunchTimeout = TimeSpan.FromSeconds(1);

    private readonly Argument<int>? _pid;
    private readonly Option<string?>? _module;
    private readonly Option<int>? _timeout;

    private SiteCommandOptions(Argument<int>? pid, Option<string?>? module, Option<int>? timeout)
    {
        _pid = pid;
        _module = module;
        _timeout = timeout;
    }

    /// <summary>
    /// key and callsites: the process argument before the command's own, and <c>--module</c> (the module whose
    /// <paramref name="sitesChanged"/>, "sites to switch" say) and <c>--timeout</c> before its options.
    /// </summary>
    public static SiteCommandOptions AddToProcessCommand(Command command, string sitesChanged)
    {
        var options = new SiteCommandOptions(
            PayloadCommandOptions.PidArgument(),
            new Option<string?>("--module") { Description = $"The module whose {sitesChanged} (default: the main program)." },
            PayloadCommandOptions.TimeoutOption());
        command.Arguments.Insert(0, options._pid!);
        command.Options.Insert(0, options._timeout!);
        command.Options.Insert(0, options._module!);
        return options;
    }

    /// <summary>sites: <c>--timeout</c>, after the command's own options, for <c>--up</c> and <c>--smp</c>.</summary>
    public static SiteCommandOptions AddToSitesCommand(Command command)
    {
        var options = new SiteCommandOptions(null, null, new Option<int>("--timeout")
        {
            Description = $"With --up or --smp: milliseconds to wait for every thread to stop (default {PayloadCommandOptions.DefaultTimeoutMilliseconds}).",
            DefaultValueFactory = _ => PayloadCommandOptions.DefaultTimeoutMilliseconds,
            Validators = { PayloadCommandOptions.RequirePositive },
        });
        command.Options.Add(options._timeout!);
        return options;
    }

    /// <summary>run: no option; the program it starts is given a second to stop.</summary>
    public static SiteCommandOptions ForRunCommand() => new(null, null, null);

    /// <summary>The target process id given.</summary>
    public int Pid(ParseResult parse) => parse.GetValue(_pid ?? throw new InvalidOperationException("this command takes no process id argument"));

    /// <summary>The module given with <c>--module</c>, or null for the main program.</summary>
    public string? Module(ParseResult parse) => _module is null ? null : parse.GetValue(_module);

    /// <summary>
    /// The options for the site patcher: the timeout given, or run's second; on a running process (<paramref name="pid"/>),
    /// no site changes while a payload action waits for <c>livepatch recover</c>.
    /// </summary>
    public SitePatcherOptions ToSitePatcherOptions(ParseResult parse, int? pid, CancellationToken cancellation) => new()
    {
        Timeout = _timeout is null ? LaunchTimeout : PayloadCommandOptions.TimeoutOf(parse.GetValue(_timeout)),
        Cancellation = cancellation,
        BeforeChange = pid is { } target ? () => LivePatcher.RefuseWhileInterrupted(target) : null,
    };

    /// <summary>The options for the payload patcher (run's payloads): run's second, and the debug directories given.</summary>
    public LivePatchOptions ToLivePatchOptions(ParseResult parse, IReadOnlyList<string> debugDirectories, CancellationToken cancellation) => new()
    {
        DebugDirectories = debugDirectories,
        Timeout = _timeout is null ? LaunchTimeout : PayloadCommandOptions.TimeoutOf(parse.GetValue(_timeout)),
        Cancellation = cancellation,
        Checkpoint = KillAtStep.FromEnvironment(),
    };
}
