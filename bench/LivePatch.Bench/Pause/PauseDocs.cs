using System.Globalization;
using System.Text;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Pause;

/// <summary>Writes the measured section of docs/benchmarks.md, between <c>&lt;!-- pause:begin --&gt;</c> and <c>&lt;!-- pause:end --&gt;</c>.</summary>
internal static class PauseDocs
{
    private static readonly TimeSpan Goal = TimeSpan.FromMicroseconds(100);

    /// <summary>Replaces the section and returns the file's path.</summary>
    public static string Write(string root, IReadOnlyList<ThreadCountResult> results, PauseOptions options, Machine machine) =>
        BenchmarksDocument.ReplaceSection(root, "pause", Section(results, options, machine));

    private static string Section(IReadOnlyList<ThreadCountResult> results, PauseOptions options, Machine machine)
    {
        var text = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        text.AppendLine(inv, $"Measured {DateTime.UtcNow:yyyy-MM-dd} on {machine.Cpus} CPUs ({machine.CpuModel}), Linux {machine.Kernel}, {machine.Runtime}, {machine.Gdb};");
        text.AppendLine(inv, $"{options.Runs} applies and {options.Runs} reverts per thread count, {options.GdbRuns} gdb writes, {options.Runs} idle windows of {options.Idle.TotalMilliseconds:0} ms; stop timeout {options.Timeout.TotalMilliseconds:0} ms.");
        text.AppendLine();
        text.AppendLine("Ours (apply and revert together) against gdb, the longest interval in which no busy thread made progress, as the target saw it (median / worst):");
        text.AppendLine();
        text.Append(PauseTables.Markdown(results, details: false));
        text.AppendLine();
        text.AppendLine("Every measure, per operation (median / worst). *Reported by patcher* is `ApplyReport.Pause` / `RevertReport.Pause`; *idle* is the same window with nothing done in it, the noise floor of this machine:");
        text.AppendLine();
        text.Append(PauseTables.Markdown(results, details: true));
        text.AppendLine();
        foreach (var sentence in Interpretation(results, options))
            text.AppendLine(sentence);
        text.AppendLine();
        return text.ToString();
    }

    private static IEnumerable<string> Interpretation(IReadOnlyList<ThreadCountResult> results, PauseOptions options)
    {
        var inv = CultureInfo.InvariantCulture;
        foreach (var result in results)
        {
            if (result.Ours is not { } ours)
                continue;
            var verdict = ours.Median < Goal
                ? ours.Worst < Goal ? "under the 100 µs goal in every run" : $"under the 100 µs goal at the median, over it in the worst run"
                : "over the 100 µs goal";
            var line = new StringBuilder().Append(inv, $"- {result.Threads} thread{(result.Threads == 1 ? "" : "s")}: median {Summary.Format(ours.Median)}, worst {Summary.Format(ours.Worst)}, {verdict}");
            if (result.OursReported is { } reported)
                line.Append(inv, $" (the patcher reports {Summary.Format(reported.Median)} median)");
            if (result.GdbPause is { } gdb)
                line.Append(inv, $"; gdb holds them {Summary.Format(gdb.Median)} at the median, {ThreadCountResult.Ratio(ours, gdb, s => s.Median)} ours");
            var failed = result.Apply.Failures + result.Revert.Failures;
            if (failed > 0)
                line.Append(inv, $"; {failed} of {failed + result.Apply.Samples.Count + result.Revert.Samples.Count} stops timed out at {options.Timeout.TotalMilliseconds:0} ms and left {result.Apply.LeftStopped + result.Revert.LeftStopped} threads stopped");
            if (result.Idle.NoProgress is { } idle)
                line.Append(inv, $"; with nothing done the worst idle window already reached {Summary.Format(idle.Worst)}");
            yield return line.Append('.').ToString();
        }
    }
}
