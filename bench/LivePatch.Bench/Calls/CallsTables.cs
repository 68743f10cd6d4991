using System.Globalization;
using LivePatch.Bench.Common;
using Spectre.Console;

namespace LivePatch.Bench.Calls;

/// <summary>The tables of the calls benchmark, for the terminal (Spectre.Console) and for docs (Markdown).</summary>
internal static class CallsTables
{
    private static readonly string[] ResultHeader = ["", "call", "what one call runs", "ns/call (median)", "min – max", "TSC ticks/call (median)", "over (b), paired (median)"];

    private static readonly string[] ControlHeader = ["C loop", "site as built", "site direct", "site native"];

    private static readonly string[] ControlLoops = ["retpoline", "indirect", "direct", "inline"];

    public static IEnumerable<string[]> ResultRows(CallsResults results) =>
        from row in CallsResults.Rows
        let series = results.Series(row.Phase, row.Loop)
        select new[]
        {
            $"({row.Id})",
            row.Name,
            row.Runs,
            Ns(series.Median.Nanoseconds),
            $"{Ns(series.Min)} – {Ns(series.Max)}",
            series.Median.Ticks.ToString("0.0", CultureInfo.InvariantCulture),
            row.Id == "b" ? "—" : Signed(results.OverIndirect(row.Id)),
        };

    /// <summary>The C loops, which no patch touches, measured again in every phase: how far the machine drifted meanwhile.</summary>
    public static IEnumerable<string[]> ControlRows(CallsResults results) =>
        from loop in ControlLoops
        select new[] { loop }.Concat(Enum.GetValues<CallsPhase>().Select(p => Ns(results.Series(p, loop).Median.Nanoseconds))).ToArray();

    /// <summary>How far the medians of the cheap C controls (all but the retpoline) moved between the site's states.</summary>
    public static double ControlSpread(CallsResults results) => ControlLoops.Where(l => l != "retpoline").Max(l => ControlSpread(results, l));

    /// <summary>How far the median of one C control moved between the site's states.</summary>
    public static double ControlSpread(CallsResults results, string loop)
    {
        var medians = Enum.GetValues<CallsPhase>().Select(p => results.Series(p, loop).Median.Nanoseconds).ToList();
        return medians.Max() - medians.Min();
    }

    public static void Print(CallsResults results)
    {
        // Redirected to a file or a pipe, Spectre assumes 80 columns and wraps every cell.
        if (Console.IsOutputRedirected)
            AnsiConsole.Profile.Width = 220;
        var options = results.Options;
        AnsiConsole.Write(TerminalTable.Build($"One call of native_identity(x): median of {options.Rounds * options.Repeats} loops of {options.Iterations:N0} dependent calls ({options.Rounds} rounds × {options.Repeats})",
            ResultHeader, ResultRows(results).Select(r => r.Select(Plain).ToArray()), 3));
        AnsiConsole.Write(TerminalTable.Build("Controls (median ns/call)", ControlHeader, ControlRows(results), 1));
        foreach (var (phase, choice) in results.Choices)
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"{phase}: {choice.Backend} backend, {choice.Reason}; the apply's stop held the target {choice.MedianPause.TotalMicroseconds:0} µs (median of {choice.Pauses.Count})");
        AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"controls moved by up to {Ns(ControlSpread(results))} (retpoline: {Ns(ControlSpread(results, "retpoline"))}) between the site's states; TSC: {results.TicksPerNanosecond:0.000} ticks/ns; {results.Machine}");
    }

    public static string ResultMarkdown(CallsResults results) => MarkdownTable.Format(ResultHeader, ResultRows(results), 3);

    public static string ControlMarkdown(CallsResults results) => MarkdownTable.Format(ControlHeader, ControlRows(results), 1);

    public static string Ns(double nanoseconds) => nanoseconds.ToString(nanoseconds < 10 ? "0.00" : "0.0", CultureInfo.InvariantCulture) + " ns";

    public static string Signed(double nanoseconds) => (nanoseconds >= 0 ? "+" : "−") + Ns(Math.Abs(nanoseconds));

    /// <summary>A Markdown cell for the terminal: without the backquotes.</summary>
    private static string Plain(string cell) => cell.Replace("`", "", StringComparison.Ordinal);
}
