using System.Diagnostics;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Pause;

/// <summary>
/// <c>pause</c> mode: how long a live patch holds a busy target's threads, measured inside the target, against the
/// same 5-byte write done with <c>gdb -p PID -batch</c>.
/// </summary>
internal static class PauseBenchmark
{
    public const string Usage = "usage: LivePatch.Bench pause [--runs 50] [--gdb-runs 25] [--threads 1,8,64] [--idle-ms 20] [--timeout-ms 30] [--no-gdb] [--write-docs]";

    private static readonly BenchmarkMode Mode =
        new("pause", Usage, "interrupted, cleaning up after the current operation", "cancelled; target killed and shared memory removed");

    public static int Run(string[] args) => Mode.Run(args, PauseOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("bench/pause/target.c");
        var machine = Machine.Describe();
        var results = Measure(root, options, cancel);
        PauseTables.Print(results, options);
        if (options.WriteDocs)
            Console.Error.WriteLine($"pause: wrote {PauseDocs.Write(root, results, options, machine)}");
    });

    private static List<ThreadCountResult> Measure(string root, PauseOptions options, CancellationToken cancel)
    {
        if (!options.NoGdb)
            GdbBaseline.Require();
        using var build = new BuildDirectory("pause");
        var target = build.File("target");
        var payload = build.File("fix.o");
        Gcc.Compile(["-O2", "-pthread", Path.Combine(root, "bench", "pause", "target.c"), "-o", target]);
        Gcc.CompilePayload(root, "bench/pause/fix.c", payload);

        var results = new List<ThreadCountResult>();
        foreach (var threads in options.Threads)
        {
            cancel.ThrowIfCancellationRequested();
            var result = new ThreadCountResult(threads);
            results.Add(result);
            Console.Error.WriteLine($"pause: {threads} busy thread(s)");
            using var running = PauseTarget.Start(target, threads, lifetime: TimeSpan.FromMinutes(10), cancel);
            Thread.Sleep(options.Warmup);
            MeasureIdle(running, result.Idle, options, cancel);
            LivePatcherRuns.Measure(running, payload, result, options, cancel);
            if (!options.NoGdb)
                MeasureGdb(running, result.Gdb, options, cancel);
        }
        return results;
    }

    /// <summary>The noise floor: the same window with nothing done in it (hypervisor, other processes, the harness).</summary>
    private static void MeasureIdle(PauseTarget target, PauseSeries series, PauseOptions options, CancellationToken cancel)
    {
        for (var run = 0; run < options.Runs; run++)
        {
            cancel.ThrowIfCancellationRequested();
            var started = Stopwatch.GetTimestamp();
            target.Memory.OpenWindow();
            Thread.Sleep(options.Idle);
            series.Samples.Add(new PauseSample(null, ReadStall(target), Stopwatch.GetElapsedTime(started)));
        }
    }

    private static void MeasureGdb(PauseTarget target, PauseSeries series, PauseOptions options, CancellationToken cancel)
    {
        var original = target.ReadCode(5);
        GdbBaseline.WriteBytes(target.Pid, target.Compute, original); // warm-up: gdb and libc symbols into the page cache
        for (var run = 0; run < options.GdbRuns; run++)
        {
            cancel.ThrowIfCancellationRequested();
            target.Memory.OpenWindow();
            var wall = GdbBaseline.WriteBytes(target.Pid, target.Compute, original);
            series.Samples.Add(new PauseSample(null, ReadStall(target), wall));
        }
        if (!target.ReadCode(5).SequenceEqual(original))
            throw new InvalidOperationException("gdb changed compute()'s first bytes: the baseline must write them back unchanged");
    }

    /// <summary>Reads the window's stalls once every busy thread has run again after now.</summary>
    public static Stall ReadStall(PauseTarget target)
    {
        try
        {
            return target.Memory.ReadStall(PauseSharedMemory.Now(), TimeSpan.FromSeconds(10));
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}; thread states: {target.ThreadStates()}", e);
        }
    }
}

/// <summary>Command-line options of <c>pause</c>.</summary>
internal sealed record PauseOptions(int Runs, int GdbRuns, int[] Threads, TimeSpan Idle, TimeSpan Timeout, TimeSpan Warmup, bool NoGdb, bool WriteDocs)
{
    public static PauseOptions Parse(OptionReader options)
    {
        int runs = 50;
        int? gdbRuns = null;
        int[] threads = [1, 8, 64];
        var idle = TimeSpan.FromMilliseconds(20);
        var timeout = TimeSpan.FromMilliseconds(30); // the engine's default, as Xen's
        bool noGdb = false, writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--runs": runs = options.PositiveInt(); break;
                case "--gdb-runs": gdbRuns = options.PositiveInt(); break;
                case "--threads": threads = options.PositiveInts(); break;
                case "--idle-ms": idle = TimeSpan.FromMilliseconds(options.PositiveInt()); break;
                case "--timeout-ms": timeout = TimeSpan.FromMilliseconds(options.PositiveInt()); break;
                case "--no-gdb": noGdb = true; break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        // gdb takes about 3 s per write at 64 busy threads on 2 CPUs: 25 keeps a full run under 5 minutes.
        return new PauseOptions(runs, gdbRuns ?? Math.Min(runs, 25), threads, idle, timeout, TimeSpan.FromMilliseconds(500), noGdb, writeDocs);
    }
}
