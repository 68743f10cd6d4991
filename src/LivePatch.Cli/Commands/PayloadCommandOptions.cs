using System.CommandLine;
using LivePatch.Live;
using LivePatch.Targets;

namespace LivePatch.Cli.Commands;

/// <summary>
/// The process argument and the options that the payload commands (load, apply, revert, replace, unload, check, list,
/// recover) share, defined once: <see cref="AddTo"/> gives a command those it takes, and
/// <see cref="ToLivePatchOptions"/> turns what was given into the options the library needs.
/// </summary>
internal sealed class PayloadCommandOptions
{
    /// <summary>What <c>--timeout</c> defaults to, and what a command without it waits (as Xen's rendezvous).</summary>
    public const int DefaultTimeoutMilliseconds = 30;

    private readonly Argument<int> _pid = PidArgument();
    private readonly Option<int>? _timeout;
    private readonly Option<string>? _consistency;
    private readonly Option<bool>? _force;
    private readonly Option<string[]>? _deny;
    private readonly Option<bool>? _allowClones;
    private readonly Option<string[]>? _debugDirectories;

    private PayloadCommandOptions(Option<int>? timeout, Option<string>? consistency, Option<bool>? force, Option<string[]>? deny, Option<bool>? allowClones,
        Option<string[]>? debugDirectories)
    {
        _debugDirectories = debugDirectories;
        _timeout = timeout;
        _consistency = consistency;
        _force = force;
        _deny = deny;
        _allowClones = allowClones;
    }

    /// <summary>
    /// Adds the process argument to <paramref name="command"/>, before its own, and the options asked for, before its
    /// own: <c>--timeout</c> (threads wait until it to stop and to leave <paramref name="timeoutWaitsOutOf"/>),
    /// <c>--consistency</c> (actions that change which code runs), <c>--force</c>, <c>--deny</c>, <c>--allow-clones</c> and
    /// <c>--debug-dir</c> (actions that check a payload object against the process, resolving its names there).
    /// </summary>
    public static PayloadCommandOptions AddTo(Command command, bool timeout = false, bool consistency = false, bool checks = false,
        string timeoutWaitsOutOf = "the patched code")
    {
        var options = new PayloadCommandOptions(
            timeout ? TimeoutOption(timeoutWaitsOutOf) : null,
            consistency ? ConsistencyOption() : null,
            checks ? ForceOption() : null,
            checks ? DenyOption() : null,
            checks ? AllowClonesOption() : null,
            checks ? DebugDirectoryOption() : null);
        command.Arguments.Insert(0, options._pid);
        var at = 0;
        foreach (var option in new Option?[] { options._timeout, options._consistency, options._force, options._deny, options._allowClones, options._debugDirectories }.OfType<Option>())
            command.Options.Insert(at++, option);
        return options;
    }

    /// <summary>The target process id given.</summary>
    public int Pid(ParseResult parse) => parse.GetValue(_pid);

    /// <summary>The options for the library: those given, the defaults for those the command does not take.</summary>
    public LivePatchOptions ToLivePatchOptions(ParseResult parse, CancellationToken cancellation) => new()
    {
        Timeout = TimeoutOf(_timeout is null ? DefaultTimeoutMilliseconds : parse.GetValue(_timeout)),
        Consistency = _consistency is not null && parse.GetValue(_consistency) == "stack" ? ConsistencyModel.Stack : ConsistencyModel.Entry,
        Force = _force is not null && parse.GetValue(_force),
        Deny = (_deny is null ? null : parse.GetValue(_deny)) ?? [],
        AllowClones = _allowClones is not null && parse.GetValue(_allowClones),
        DebugDirectories = DebugDirectories(parse, _debugDirectories),
        Cancellation = cancellation,
        Checkpoint = KillAtStep.FromEnvironment(),
    };

    /// <summary>The <c>pid</c> argument; the site commands that act on a process take it too.</summary>
    internal static Argument<int> PidArgument() => new("pid")
    {
        Description = "The target process id.",
        CustomParser = result =>
        {
            var text = result.Tokens.Count == 1 ? result.Tokens[0].Value : "";
            if (int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pid) && pid > 0)
                return pid;
            result.AddError($"'{text}' is not a process id (a positive number, as ps shows it)");
            return 0;
        },
    };

    /// <summary><c>--timeout MS</c>; the site commands that act on a process take it too.</summary>
    internal static Option<int> TimeoutOption(string waitsOutOf = "the patched code") => new("--timeout")
    {
        Description = $"Milliseconds to wait for every thread to stop and out of {waitsOutOf} (default {DefaultTimeoutMilliseconds}, as Xen).",
        DefaultValueFactory = _ => DefaultTimeoutMilliseconds,
        Validators = { RequirePositive },
    };

    /// <summary>A <c>--timeout</c> of 0 or less is a usage error: no stop can succeed in it.</summary>
    internal static void RequirePositive(System.CommandLine.Parsing.OptionResult result)
    {
        if (result.Implicit)
            return;
        // Text that is no number at all gets the parser's own error.
        if (result.Tokens is [var token] && int.TryParse(token.Value, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var value) && value <= 0)
            result.AddError($"{result.Option.Name} must be a positive number of milliseconds, not {value}");
    }

    /// <summary><c>--debug-dir DIR</c>, repeatable; every command that resolves names in a process takes it.</summary>
    internal static Option<string[]> DebugDirectoryOption() => new("--debug-dir")
    {
        Description = "A directory of separate debug files (laid out as /usr/lib/debug: .build-id/ab/cdef.debug, or by .gnu_debuglink name) "
            + "for the symbols of stripped modules, searched before LIVEPATCH_DEBUG_DIR and /usr/lib/debug; repeat for several. It must exist.",
        AllowMultipleArgumentsPerToken = false,
    };

    /// <summary>
    /// The directories given with <paramref name="option"/>, in order (none when the command does not take it); one that
    /// does not exist is refused here, before any process is started or seized.
    /// </summary>
    /// <exception cref="DebugDirectoryNotFoundException">A directory given does not exist.</exception>
    internal static IReadOnlyList<string> DebugDirectories(ParseResult parse, Option<string[]>? option)
    {
        var directories = (option is null ? null : parse.GetValue(option)) ?? [];
        if (directories.FirstOrDefault(d => !Directory.Exists(d)) is { } missing)
            throw new DebugDirectoryNotFoundException(missing);
        return directories;
    }

    // Zero or less would mean no time at all: wait at least one millisecond.
    internal static TimeSpan TimeoutOf(int milliseconds) => TimeSpan.FromMilliseconds(Math.Max(1, milliseconds));

    private static Option<string> ConsistencyOption()
    {
        var option = new Option<string>("--consistency")
        {
            Description = "entry (default): no thread stopped inside the bytes being changed; stack: also no thread running the code that "
                + "becomes inactive or with a return address into it on its stack, waited for until --timeout (exit 5).",
            DefaultValueFactory = _ => "entry",
        };
        option.AcceptOnlyFromAmong("entry", "stack");
        return option;
    }

    private static Option<bool> ForceOption() => new("--force")
    {
        Description = "Go on when a module's build-id differs from the one the payload was built against (LIVEPATCH_TARGET_BUILD_ID); the record says it was forced.",
    };

    private static Option<string[]> DenyOption() => new("--deny")
    {
        Description = "A function never to patch (name or module!name); repeat for several.",
        AllowMultipleArgumentsPerToken = false,
    };

    private static Option<bool> AllowClonesOption() => new("--allow-clones")
    {
        Description = "Patch a function even when a copy of its code is not replaced (a gcc clone such as name.constprop.0, a copy inlined "
            + "into a caller the payload keeps) or another name shares its body; what was found is printed.",
    };
}
