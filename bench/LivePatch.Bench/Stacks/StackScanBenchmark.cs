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
/// sleeping at about STACK_KB KiB of live stack, or at a fixed depth of frames; per thread count and stack shape the harness (1) stops every
/// thread RUNS times and times, inside the stop, the memory-map read, the whole <see cref="StackScanner"/> scan and the whole
/// <see cref="StackUnwinder"/> unwind, and (2) applies and reverts
/// bench/pause/fix.c (which replaces compute()) RUNS times under each consistency model and compares the pauses.
/// </summary>
internal static partial class StackScanBenchmark
{
    public const string Usage = "usage: LivePatch.Bench stacks [--threads 8[,64...]] [--stack-kb 4,64,1024] [--depth 30] [--runs 200] [--write-docs]";

    private sealed record Row(int StackKb, int Frames, int Threads, long Bytes, TimeSpan MapMedian, TimeSpan MapP99, TimeSpan ScanMedian, TimeSpan ScanP99,
        TimeSpan UnwindMedian, TimeSpan UnwindP99, int Unwound, int Fallbacks, TimeSpan EntryPause, TimeSpan StackPause, int StackAttempts);

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
        // Rows by stack size (descend's 256-byte frames fill it), then rows at a fixed depth of descend() frames.
        var shapes = options.StackKb.Select(kb => (Kb: kb, Frames: kb * 1024 / 256, Fixed: false))
            .Append((Kb: Math.Max(8, options.Depth * 256 / 1024 * 2), Frames: options.Depth, Fixed: true));
        foreach (var (threads, shape) in options.Threads.SelectMany(t => shapes.Select(k => (t, k))))
        {
            cancel.ThrowIfCancellationRequested();
            Console.Error.WriteLine($"stacks: {threads} threads at {shape.Frames} frames ({shape.Kb} KiB of stack)");
            string[] arguments = shape.Fixed
                ? [threads.ToString(CultureInfo.InvariantCulture), shape.Kb.ToString(CultureInfo.InvariantCulture), "600", shape.Frames.ToString(CultureInfo.InvariantCulture)]
                : [threads.ToString(CultureInfo.InvariantCulture), shape.Kb.ToString(CultureInfo.InvariantCulture), "600"];
            using var target = ShellTarget.Start("stacks target", executable, arguments, ReadyLine(), cancel);
            var measured = MeasureScan(target.Pid, runs, cancel);
            var (entry, _) = MeasurePause(target.Pid, payload, ConsistencyModel.Entry, runs / 4, cancel);
            var (stack, attempts) = MeasurePause(target.Pid, payload, ConsistencyModel.Stack, runs / 4, cancel);
            rows.Add(new Row(shape.Fixed ? 0 : shape.Kb, shape.Frames, threads + 1, measured.Bytes, Median(measured.Map), Percentile(measured.Map, 0.99),
                Median(measured.Scan), Percentile(measured.Scan, 0.99), Median(measured.Unwind), Percentile(measured.Unwind, 0.99), measured.Frames,
                measured.Fallbacks, Median(entry), Median(stack), attempts));
        }
        foreach (var row in rows)
            Console.WriteLine($"{row.Threads} threads, {Shape(row)}: {row.Bytes / 1024.0:0.#} KiB scanned; map read {Micro(row.MapMedian)} (p99 {Micro(row.MapP99)}); "
                + $"scan with map {Micro(row.ScanMedian)} (p99 {Micro(row.ScanP99)}); unwind {Micro(row.UnwindMedian)} (p99 {Micro(row.UnwindP99)}), {row.Unwound} frames, {row.Fallbacks} fallbacks; "
                + $"apply pause entry {Micro(row.EntryPause)}, stack {Micro(row.StackPause)}");
        var parses = MeasureParse(runs / 10);
        foreach (var (module, size, fdes, load, parse) in parses)
            Console.WriteLine($"CFI of {module} ({size >> 10} KiB .eh_frame, {fdes} FDEs): ELF read {Micro(load)}, CFI read and indexed {Micro(parse)}");
        if (options.WriteDocs)
            Console.WriteLine($"stacks: wrote {WriteDocs(root, rows, parses, runs)}");
    });

    /// <summary>
    /// Stops every thread <paramref name="runs"/> times (after 20 unmeasured) and times inside each stop the mappings
    /// read, the scan, and the unwind (the code map and CFI prepared before the stops, as apply prepares them).
    /// </summary>
    private static (long Bytes, List<TimeSpan> Map, List<TimeSpan> Scan, List<TimeSpan> Unwind, int Frames, int Fallbacks) MeasureScan(int pid, int runs, CancellationToken cancel)
    {
        StopWindowCode.EnsureCompiled();
        using var target = TargetProcess.Open(pid);
        var compute = target.ResolveSymbol("compute");
        CodeRange[] ranges = [new CodeRange(compute.Address, compute.Address + compute.Size, compute.Address + 1, "compute")];
        var scanner = new StackScanner(target, ranges);
        var unwinder = new StackUnwinder(target, ranges);
        var bounds = new MappingBounds(pid);
        var maps = new List<TimeSpan>();
        var scans = new List<TimeSpan>();
        var unwinds = new List<TimeSpan>();
        long bytes = 0;
        int frames = 0, fallbacks = 0;
        using var session = PtraceSession.Attach(pid);
        for (var run = -20; run < runs; run++)
        {
            cancel.ThrowIfCancellationRequested();
            var (map, scan, unwind, scanned, result) = session.OnTracer(() =>
            {
                session.StopAll(Stopwatch.GetTimestamp() + 2 * Stopwatch.Frequency);
                try
                {
                    var threads = session.StoppedThreads.Select(tid =>
                    {
                        var registers = session.GetRegisters(tid);
                        return new StoppedThread(tid, registers.Rip, registers.Rsp) { Registers = ThreadRegisters.From(registers) };
                    }).ToList();
                    var start = Stopwatch.GetTimestamp();
                    bounds.Refresh();
                    foreach (var thread in threads)
                        bounds.Find(thread.Rsp);
                    bounds.Release();
                    var mapped = Stopwatch.GetTimestamp();
                    var result = scanner.Scan(threads);
                    var scannedAt = Stopwatch.GetTimestamp();
                    var unwound = unwinder.Unwind(threads);
                    var end = Stopwatch.GetTimestamp();
                    return (Stopwatch.GetElapsedTime(start, mapped), Stopwatch.GetElapsedTime(mapped, scannedAt), Stopwatch.GetElapsedTime(scannedAt, end), result.BytesScanned, unwound);
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
                unwinds.Add(unwind);
                bytes = scanned;
                frames = result.Frames;
                fallbacks = result.Fallbacks.Count;
            }
            Thread.Sleep(2);
        }
        return (bytes, maps, scans, unwinds, frames, fallbacks);
    }

    /// <summary>
    /// What preparing the unwinder costs per module, before the stop: libc's and the .NET runtime's (a large module)
    /// ELF read, then their .eh_frame read and indexed; medians of <paramref name="runs"/>.
    /// </summary>
    private static List<(string Module, long Size, int Fdes, TimeSpan Load, TimeSpan Parse)> MeasureParse(int runs)
    {
        var modules = new[] { "/lib/x86_64-linux-gnu/libc.so.6", Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "libcoreclr.so") };
        var results = new List<(string, long, int, TimeSpan, TimeSpan)>();
        foreach (var path in modules.Where(File.Exists))
        {
            var loads = new List<TimeSpan>();
            var parses = new List<TimeSpan>();
            long size = 0;
            var fdes = 0;
            for (var run = -2; run < Math.Max(runs, 5); run++)
            {
                var start = Stopwatch.GetTimestamp();
                var elf = Elf.ElfFile.Load(path);
                var loaded = Stopwatch.GetTimestamp();
                var info = Elf.CallFrameInfo.Read(elf);
                var end = Stopwatch.GetTimestamp();
                if (run < 0)
                    continue;
                loads.Add(Stopwatch.GetElapsedTime(start, loaded));
                parses.Add(Stopwatch.GetElapsedTime(loaded, end));
                size = info.Data.Length;
                fdes = info.Count;
            }
            results.Add((Path.GetFileName(path), size, fdes, Median(loads), Median(parses)));
        }
        return results;
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
    private static string WriteDocs(string root, List<Row> rows, List<(string Module, long Size, int Fdes, TimeSpan Load, TimeSpan Parse)> parses, int runs)
    {
        var table = string.Join("\n", rows.Select(r =>
            $"| {r.Threads} | {Shape(r)} | {r.Bytes / 1024.0:0.#} KiB | {Micro(r.MapMedian)} / {Micro(r.MapP99)} | {Micro(r.ScanMedian)} / {Micro(r.ScanP99)} | {Micro(r.UnwindMedian)} / {Micro(r.UnwindP99)} | {r.Unwound} | {r.Fallbacks} | {Micro(r.EntryPause)} | {Micro(r.StackPause)} |"));
        var parseTable = string.Join("\n", parses.Select(p => $"| {p.Module} | {p.Size >> 10} KiB | {p.Fdes} | {Micro(p.Load)} | {Micro(p.Parse)} |"));
        var section = $"""
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Environment.ProcessorCount} CPUs, Linux {Environment.OSVersion.Version}, Release build: bench/stacks/target.c, its
            threads asleep in nanosleep at the stack depth shown, the main thread calling compute() every millisecond. Scan and unwind: {runs}
            stops, each timing inside the stop the stack mappings' lookup alone (open /proc/PID/maps, one PROCMAP_QUERY per thread,
            close), then the whole scan (lookup again, one /proc/PID/mem read per thread, the words compared), then the whole
            unwind (lookup again, every thread unwound frame by frame with the CFI prepared before the stops; frames and fallbacks
            are those of one stop, every thread together). Pause: {Math.Max(runs / 4, 5)} applies of bench/pause/fix.c per model, medians
            of `ApplyReport.Pause` (the stack model unwinds).

            | threads stopped | sleeping threads' stacks | stack bytes scanned per stop | mapping lookup, median / p99 | whole scan, median / p99 | whole unwind, median / p99 | frames unwound | fallbacks | apply pause, entry | apply pause, stack |
            | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
            {table}

            Before the stop, once per module (cached by `TargetModule`): the ELF file read, then its `.eh_frame` read and its FDEs indexed (medians of {Math.Max(runs / 10, 5)}):

            | module | .eh_frame | FDEs | ELF read | CFI read and indexed |
            | --- | ---: | ---: | ---: | ---: |
            {parseTable}

            """;
        return BenchmarksDocument.ReplaceSection(root, "stacks", section);
    }

    private static string Shape(Row row) => row.StackKb == 0 ? $"{row.Frames} frames deep" : $"{row.StackKb} KiB ({row.Frames} frames)";

    private static string Micro(TimeSpan value) => value.TotalMicroseconds < 100 ? $"{value.TotalMicroseconds:0.0} µs" : $"{value.TotalMicroseconds:0} µs";

    private static TimeSpan Median(List<TimeSpan> values) => Percentile(values, 0.5);

    private static TimeSpan Percentile(List<TimeSpan> values, double fraction) =>
        values.Order().ElementAt(Math.Min(values.Count - 1, (int)(values.Count * fraction)));

    [GeneratedRegex(@"^ready (\d+) compute=0x[0-9a-f]+$")]
    private static partial Regex ReadyLine();
}

/// <summary>Command-line options of <c>stacks</c>.</summary>
internal sealed record StacksOptions(int[] Threads, int[] StackKb, int Depth, int Runs, bool WriteDocs)
{
    public static StacksOptions Parse(OptionReader options)
    {
        int[] threads = [8];
        int[] stackKb = [4, 64, 1024];
        var depth = 30;
        var runs = 200;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--threads": threads = options.PositiveInts(); break;
                case "--stack-kb": stackKb = options.PositiveInts(); break;
                case "--depth": depth = options.PositiveInt(); break;
                case "--runs": runs = options.PositiveInt(); break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new StacksOptions(threads, stackKb, depth, runs, writeDocs);
    }
}
