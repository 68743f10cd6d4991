using System.CommandLine;
using LivePatch.Live;

namespace LivePatch.Cli.Commands;

internal static partial class LiveCommands
{
    /// <summary><c>--consistency entry|stack</c>, for the actions that change which code runs (apply, revert, replace).</summary>
    internal static Option<string> ConsistencyOption()
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

    private static LivePatchOptions Options(int timeoutMilliseconds, string? consistency, CancellationToken cancellation)
    {
        var options = Options(timeoutMilliseconds, cancellation);
        return new LivePatchOptions
        {
            Timeout = options.Timeout,
            Cancellation = options.Cancellation,
            Checkpoint = options.Checkpoint,
            Consistency = consistency == "stack" ? ConsistencyModel.Stack : ConsistencyModel.Entry,
        };
    }
}
