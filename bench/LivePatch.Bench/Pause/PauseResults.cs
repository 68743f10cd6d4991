using System.Globalization;

namespace LivePatch.Bench.Pause;

/// <summary>One measured operation: what the patcher reported (ours only), what the target saw, how long the call took.</summary>
internal readonly record struct PauseSample(TimeSpan? Reported, Stall Stall, TimeSpan Wall);

/// <summary>All runs of one operation (apply, revert, gdb, idle) at one thread count.</summary>
internal sealed class PauseSeries(string operation, int threads)
{
    public string Operation { get; } = operation;

    public int Threads { get; } = threads;

    public List<PauseSample> Samples { get; } = [];

    /// <summary>Runs that failed, with the first message, e.g. a stop that timed out.</summary>
    public int Failures { get; private set; }

    public string? FirstFailure { get; private set; }

    /// <summary>Threads found still stopped after failed runs (an engine bug: see LivePatcherRuns.CountLeftStopped).</summary>
    public int LeftStopped { get; set; }

    public void Fail(string message)
    {
        Failures++;
        FirstFailure ??= message;
    }

    public Summary? Reported => Summary.Of(Samples.Where(s => s.Reported is not null).Select(s => s.Reported!.Value));

    public Summary? NoProgress => Summary.Of(Samples.Select(s => s.Stall.NoProgress));

    public Summary? ThreadGap => Summary.Of(Samples.Select(s => s.Stall.ThreadGap));

    public Summary? Wall => Summary.Of(Samples.Select(s => s.Wall));
}

/// <summary>Median and worst of a set of durations.</summary>
internal readonly record struct Summary(TimeSpan Median, TimeSpan Worst, int Count)
{
    public static Summary? Of(IEnumerable<TimeSpan> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0)
            return null;
        var middle = sorted.Length / 2;
        var median = sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
        return new Summary(median, sorted[^1], sorted.Length);
    }

    public override string ToString() => $"{Format(Median)} / {Format(Worst)}";

    public static string Format(TimeSpan value) => value.TotalMicroseconds switch
    {
        < 1_000 => value.TotalMicroseconds.ToString("0", CultureInfo.InvariantCulture) + " µs",
        < 1_000_000 => value.TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture) + " ms",
        _ => value.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture) + " s",
    };

    public static string Format(Summary? summary) => summary?.ToString() ?? "—";
}

/// <summary>Everything measured at one thread count.</summary>
internal sealed class ThreadCountResult(int threads)
{
    public int Threads { get; } = threads;

    public PauseSeries Idle { get; } = new("idle (no patching)", threads);

    public PauseSeries Attach { get; } = new("attach", threads);

    public PauseSeries Apply { get; } = new("apply", threads);

    public PauseSeries Revert { get; } = new("revert", threads);

    public PauseSeries Gdb { get; } = new("gdb 5-byte write", threads);

    public IEnumerable<PauseSeries> All => [Idle, Attach, Apply, Revert, Gdb];

    /// <summary>Apply and revert together: the pause our patcher imposes, as the target saw it.</summary>
    public Summary? Ours => Summary.Of(Apply.Samples.Concat(Revert.Samples).Select(s => s.Stall.NoProgress));

    /// <summary>Apply and revert together, as the patcher reported it.</summary>
    public Summary? OursReported => Summary.Of(Apply.Samples.Concat(Revert.Samples).Where(s => s.Reported is not null).Select(s => s.Reported!.Value));

    public Summary? GdbPause => Gdb.NoProgress;

    public static string Ratio(Summary? ours, Summary? gdb, Func<Summary, TimeSpan> pick) =>
        ours is { } o && gdb is { } g && pick(o) > TimeSpan.Zero
            ? (pick(g) / pick(o)).ToString("#,0", CultureInfo.InvariantCulture) + "×"
            : "—";
}
