using System.Globalization;
using LivePatch.Bench.Common;
using Spectre.Console;

namespace LivePatch.Bench.Pause;

/// <summary>The two tables of the pause benchmark, for the terminal (Spectre.Console) and for docs (Markdown).</summary>
internal static class PauseTables
{
    private static readonly string[] DetailHeader =
        ["threads", "operation", "runs", "reported by patcher", "no thread progressing (the pause)", "longest one-thread gap", "wall time"];

    private static readonly string[] SummaryHeader =
        ["threads", "ours: median", "ours: worst", "ours as reported: median / worst", "gdb: median", "gdb: worst", "gdb ÷ ours (median)", "gdb ÷ ours (worst)"];

    /// <summary>Per thread count and operation: median / worst of each measure.</summary>
    public static IEnumerable<string[]> DetailRows(IEnumerable<ThreadCountResult> results) =>
        from result in results
        from series in result.All
        where series.Samples.Count > 0 || series.Failures > 0
        select new[]
        {
            result.Threads.ToString(CultureInfo.InvariantCulture),
            series.Operation,
            series.Failures == 0 ? series.Samples.Count.ToString(CultureInfo.InvariantCulture)
                : $"{series.Samples.Count} (+{series.Failures} timed out{(series.LeftStopped > 0 ? $", {series.LeftStopped} threads left stopped" : "")})",
            Summary.Format(series.Reported),
            Summary.Format(series.NoProgress),
            Summary.Format(series.ThreadGap),
            series.Wall is { } wall ? Summary.Format(wall.Median) : "—",
        };

    /// <summary>Per thread count: our pause (apply and revert together, in-target) against gdb's.</summary>
    public static IEnumerable<string[]> SummaryRows(IEnumerable<ThreadCountResult> results) =>
        from result in results
        select new[]
        {
            result.Threads.ToString(CultureInfo.InvariantCulture),
            result.Ours is { } o ? Summary.Format(o.Median) : "—",
            result.Ours is { } w ? Summary.Format(w.Worst) : "—",
            Summary.Format(result.OursReported),
            result.GdbPause is { } g ? Summary.Format(g.Median) : "—",
            result.GdbPause is { } gw ? Summary.Format(gw.Worst) : "—",
            ThreadCountResult.Ratio(result.Ours, result.GdbPause, s => s.Median),
            ThreadCountResult.Ratio(result.Ours, result.GdbPause, s => s.Worst),
        };

    public static void Print(IReadOnlyList<ThreadCountResult> results, PauseOptions options)
    {
        // Redirected to a file or a pipe, Spectre assumes 80 columns and wraps every cell.
        if (Console.IsOutputRedirected)
            AnsiConsole.Profile.Width = 200;
        AnsiConsole.Write(TerminalTable.Build($"Pause per operation (median / worst; {options.Runs} runs, gdb {options.GdbRuns})", DetailHeader, DetailRows(results), 2));
        AnsiConsole.Write(TerminalTable.Build("Ours (apply + revert) vs gdb: longest interval with no thread progressing, seen by the target", SummaryHeader, SummaryRows(results), 2));
        foreach (var failure in results.SelectMany(r => r.All).Where(s => s.FirstFailure is not null))
            AnsiConsole.MarkupLineInterpolated(CultureInfo.InvariantCulture, $"[yellow]{failure.Threads} threads, {failure.Operation}: {failure.Failures} timed out, first: {failure.FirstFailure}[/]");
    }

    public static string Markdown(IEnumerable<ThreadCountResult> results, bool details) =>
        details ? MarkdownTable.Format(DetailHeader, DetailRows(results), 2) : MarkdownTable.Format(SummaryHeader, SummaryRows(results), 1);
}
