using System.Runtime.InteropServices;

namespace LivePatch.Bench.Common;

/// <summary>
/// One mode of the benchmark program on the command line (<c>pause</c>, <c>calls</c>, …): its options read, with the
/// usage line and exit code 2 when they are wrong; Ctrl-C and SIGTERM turned into a cancellation, so that the current
/// operation ends and every finally (kill the target, remove the build) runs, then exit code 130; any failure reported
/// on one line with exit code 1.
/// </summary>
/// <param name="Name">The mode's name, which starts every line it writes to stderr.</param>
/// <param name="Usage">The usage line, shown when the options are wrong.</param>
/// <param name="OnInterrupt">What the mode does after Ctrl-C, e.g. "interrupted, ending the target".</param>
/// <param name="OnCancelled">What the mode left behind when it stopped early, e.g. "cancelled; target ended".</param>
internal sealed record BenchmarkMode(string Name, string Usage, string OnInterrupt, string OnCancelled)
{
    /// <summary>Parses <paramref name="args"/> with <paramref name="parse"/>, runs <paramref name="measure"/> and returns the exit code.</summary>
    public int Run<TOptions>(string[] args, Func<OptionReader, TOptions> parse, Action<TOptions, CancellationToken> measure)
    {
        TOptions options;
        try
        {
            options = parse(new OptionReader(args));
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(Usage);
            return 2;
        }

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCtrlC = (_, e) =>
        {
            // Never abandon an operation half-done (a stop, a write): finish it, then clean up and leave.
            e.Cancel = true;
            Console.Error.WriteLine($"{Name}: {OnInterrupt}");
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCtrlC;
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            cancel.Cancel();
        });
        try
        {
            measure(options, cancel.Token);
            return 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine($"{Name}: {OnCancelled}");
            return 130;
        }
        catch (Exception e)
        {
            // Caught here, not left unhandled, so that every finally (kill the target, remove the build) runs.
            Console.Error.WriteLine($"{Name}: {e.GetType().Name}: {e.Message}");
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCtrlC;
        }
    }
}
