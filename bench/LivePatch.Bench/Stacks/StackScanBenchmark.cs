using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;
using LivePatch.Live;
using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Bench.Stacks;

/// <summary>
/// <c>stacks</c> mode: what <c>--consistency=stack</c> adds to a stop. bench/stacks/target.c runs THREADS threads, each
/// sleeping at about STACK_KB KiB of live stack; per thread count and stack size the harness (1) stops every thread RUNS times and times,
/// inside the stop, the memory-map read and the whole <see cref="StackScanner"/> scan, and (2) applies and reverts
/// bench/pause/fix.c (which replaces compute()) RUNS times under each consistency model and compares the pauses.
/// </summary>
internal static partial class StackScanBenchmark
{
    public const string Usage = "usage: LivePatch.Bench stacks [--threads 8[,64...]] [--stack-kb 4,64,1024] [--runs 200] [--write-docs]";

    private sealed record Row(int StackKb, int Threads, long Bytes, TimeSpan MapMedian, TimeSpan MapP99, TimeSpan ScanMedian, TimeSpan ScanP99,
        TimeSpan EntryPause, TimeSpan StackPause, int StackAttempts);

    private static readonly BenchmarkMode Mode = new("stacks", Usage, "interrupted, ending the target", "cancelled; target ended");

    public static int Run(string[] args) => Mode.Run(args, StacksOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("bench/stacks/target.c");
        using var build = new BuildDirectory("stacks");
        var executable = build.File("target");
        var payload = build.File("fix.o");
        Gcc.Compile(["-O2", "-pthread", Path.Combine(root, "bench", "stacks", "target.c"), "-o", executable]);
        Gcc.CompilePayload(root, "bench/pause/fix.c", payload);
        var runs = options.Runs;
        var rows = new List<Row>();
        foreach (var (threads, kb) in options.Threads.SelectMany(t => options.StackKb.Select(k => (t, k))))
        {
            cancel.ThrowIfCancellationRequested();
            Console.Error.WriteLine($"stacks: {threads} threads at {kb} KiB of stack");
            using var target = ShellTarget.Start("stacks target", executable,
                [threads.ToString(CultureInfo.InvariantCulture), kb.ToString(CultureInfo.InvariantCulture), "600"], ReadyLine(), cancel);
            var (bytes, map, scan) = MeasureScan(target.Pid, runs, cancel);
            var (entry, _) = MeasurePause(target.Pid, payload, ConsistencyModel.Entry, runs / 4, cancel);
            var (stack, attempts) = MeasurePause(target.Pid, payload, ConsistencyModel.Stack, runs / 4, cancel);
            rows.Add(new Row(kb, threads + 1, bytes, Median(map), Percentile(map, 0.99), Median(scan), Percentile(scan, 0.99), Median(entry), Median(stack), attempts));
        }
        foreach (var row in rows)
            Console.WriteLine($"{row.Threads} threads, {row.StackKb} KiB each: {row.Bytes / 1024.0:0.#} KiB scanned; map read {Micro(row.MapMedian)} (p99 {Micro(row.MapP99)}); "
                + $"scan with map {Micro(row.ScanMedian)} (p99 {Micro(row.ScanP99)}); apply pause entry {Micro(row.EntryPause)}, stack {Micro(row.StackPause)}");
        if (options.WriteDocs)
            Console.WriteLine($"stacks: wrote {WriteDocs(root, rows, runs)}");
    });

    /// <summary>Stops every thread <paramref name="runs"/> times (after 20 unmeasured) and times the mappings read and the scan inside each stop.</summary>
    private static (long Bytes, List<TimeSpan> Map, List<TimeSpan> Scan) MeasureScan(int pid, int runs, CancellationToken cancel)
    {
        StopWindowCode.EnsureCompiled();
        using var target = TargetProcess.Open(pid);
        var compute = target.ResolveSymbol("compute");
        var scanner = new StackScanner(target, [new CodeRange(compute.Address, compute.Address + compute.Size, compute.Address + 1, "compute")]);
        var bounds = new MappingBounds(pid);
        var maps = new List<TimeSpan>();
        var scans = new List<TimeSpan>();
        long bytes = 0;
        using var session = PtraceSession.Attach(pid);
        for (var run = -20; run < runs; run++)
        {
            cancel.ThrowIfCancellationRequested();
            var (map, scan, scanned) = session.OnTracer(() =>
            {
                session.StopAll(Stopwatch.GetTimestamp() + 2 * Stopwatch.Frequency);
                try
                {
                    var threads = session.StoppedThreads.Select(tid =>
                    {
                        var registers = session.GetRegisters(tid);
                        return new StoppedThread(tid, registers.Rip, registers.Rsp);
                    }).ToList();
                    var start = Stopwatch.GetTimestamp();
                    bounds.Refresh();
                    foreach (var thread in threads)
                        bounds.Find(thread.Rsp);
                    bounds.Release();
                    var mapped = Stopwatch.GetTimestamp();
                    var result = scanner.Scan(threads);
                    var end = Stopwatch.GetTimestamp();
                    return (Stopwatch.GetElapsedTime(start, mapped), Stopwatch.GetElapsedTime(mapped, end), result.BytesScanned);
                }
                finally
                {
                    session.ResumeAll();
                }
            });
            if (run >= 0)
            {
                maps.Add(map);
                scans.Add(scan);
                bytes = scanned;
            }
            Thread.Sleep(2);
        }
        return (bytes, maps, scans);
    }

    /// <summary>Applies and reverts the payload <paramref name="runs"/> times (after one unmeasured pair) under <paramref name="model"/>.</summary>
    private static (List<TimeSpan> Pauses, int MaxAttempts) MeasurePause(int pid, string payload, ConsistencyModel model, int runs, CancellationToken cancel)
    {
        using var patcher = LivePatcher.Attach(pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(2), Consistency = model });
        // Loaded once, then applied by name: a reverted payload stays loaded.
        var name = Path.GetFileNameWithoutExtension(payload);
        patcher.Revert(patcher.List().Any(p => p.Name == name) ? patcher.ApplyLoaded(name).Payload : patcher.Apply(payload).Payload);
        var pauses = new List<TimeSpan>();
        var attempts = 0;
        for (var run = 0; run < Math.Max(runs, 5); run++)
        {
            cancel.ThrowIfCancellationRequested();
            var applied = patcher.ApplyLoaded(name);
            pauses.Add(applied.Pause);
            attempts = Math.Max(attempts, applied.Attempts);
            patcher.Revert(applied.Payload);
            Thread.Sleep(2);
        }
        return (pauses, attempts);
    }

    /// <summary>Replaces the stacks section of docs/benchmarks.md and returns the file's path.</summary>
    private static string WriteDocs(string root, List<Row> rows, int runs)
    {
        var table = string.Join("\n", rows.Select(r =>
            $"| {r.Threads} | {r.StackKb} KiB | {r.Bytes / 1024.0:0.#} KiB | {Micro(r.MapMedian)} / {Micro(r.MapP99)} | {Micro(r.ScanMedian)} / {Micro(r.ScanP99)} | {Micro(r.EntryPause)} | {Micro(r.StackPause)} |"));
        var section = $"""
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Environment.ProcessorCount} CPUs, Linux {Environment.OSVersion.Version}, Release build: bench/stacks/target.c, its
            threads asleep in nanosleep at the stack depth shown, the main thread calling compute() every millisecond. Scan: {runs}
            stops, each timing inside the stop the stack mappings' lookup alone (open /proc/PID/maps, one PROCMAP_QUERY per thread,
            close), then the whole scan (lookup again, one /proc/PID/mem read per thread, the words compared). Pause:
            {Math.Max(runs / 4, 5)} applies of bench/pause/fix.c per model, medians of `ApplyReport.Pause`.

            | threads stopped | live stack per sleeping thread | stack bytes scanned per stop | mapping lookup, median / p99 | whole scan, median / p99 | apply pause, entry | apply pause, stack |
            | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
            {table}

            """;
        return BenchmarksDocument.ReplaceSection(root, "stacks", section);
    }

    private static string Micro(TimeSpan value) => value.TotalMicroseconds < 100 ? $"{value.TotalMicroseconds:0.0} µs" : $"{value.TotalMicroseconds:0} µs";

    private static TimeSpan Median(List<TimeSpan> values) => Percentile(values, 0.5);

    private static TimeSpan Percentile(List<TimeSpan> values, double fraction) =>
        values.Order().ElementAt(Math.Min(values.Count - 1, (int)(values.Count * fraction)));

    [GeneratedRegex(@"^ready (\d+) compute=0x[0-9a-f]+$")]
    private static partial Regex ReadyLine();
}

/// <summary>Command-line options of <c>stacks</c>.</summary>
internal sealed record StacksOptions(int[] Threads, int[] StackKb, int Runs, bool WriteDocs)
{
    public static StacksOptions Parse(OptionReader options)
    {
        int[] threads = [8];
        int[] stackKb = [4, 64, 1024];
        var runs = 200;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--threads": threads = options.PositiveInts(); break;
                case "--stack-kb": stackKb = options.PositiveInts(); break;
                case "--runs": runs = options.PositiveInt(); break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new StacksOptions(threads, stackKb, runs, writeDocs);
    }
}
