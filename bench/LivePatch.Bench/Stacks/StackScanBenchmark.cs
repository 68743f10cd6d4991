using System.Diagnostics;
using System.Globalization;
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
internal static class StackScanBenchmark
{
    public const string Usage = "usage: LivePatch.Bench stacks [--threads 8[,64...]] [--stack-kb 4,64,1024] [--runs 200] [--write-docs]";

    private sealed record Row(int StackKb, int Threads, long Bytes, TimeSpan MapMedian, TimeSpan MapP99, TimeSpan ScanMedian, TimeSpan ScanP99,
        TimeSpan EntryPause, TimeSpan StackPause, int StackAttempts);

    public static int Run(string[] args)
    {
        int[] threadCounts = [8];
        int[] stackKb = [4, 64, 1024];
        var runs = 200;
        var writeDocs = false;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--threads" when i + 1 < args.Length:
                    threadCounts = [.. args[++i].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
                    break;
                case "--stack-kb" when i + 1 < args.Length:
                    stackKb = [.. args[++i].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture))];
                    break;
                case "--runs" when i + 1 < args.Length:
                    runs = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--write-docs":
                    writeDocs = true;
                    break;
                default:
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }

        var root = RepositoryRoot();
        var build = Directory.CreateTempSubdirectory("livepatch-stacks-");
        try
        {
            var executable = Path.Combine(build.FullName, "target");
            var payload = Path.Combine(build.FullName, "fix.o");
            Gcc(["-O2", "-pthread", Path.Combine(root, "bench", "stacks", "target.c"), "-o", executable]);
            Gcc(["-c", "-O2", "-fPIC", "-ffunction-sections", "-I", Path.Combine(root, "native", "include"), Path.Combine(root, "bench", "pause", "fix.c"), "-o", payload]);
            var rows = new List<Row>();
            foreach (var (threads, kb) in threadCounts.SelectMany(t => stackKb.Select(k => (t, k))))
            {
                Console.Error.WriteLine($"stacks: {threads} threads at {kb} KiB of stack");
                var pid = Start(executable, threads, kb, out var shell);
                try
                {
                    var (bytes, map, scan) = MeasureScan(pid, runs);
                    var (entry, _) = MeasurePause(pid, payload, ConsistencyModel.Entry, runs / 4);
                    var (stack, attempts) = MeasurePause(pid, payload, ConsistencyModel.Stack, runs / 4);
                    rows.Add(new Row(kb, threads + 1, bytes, Median(map), Percentile(map, 0.99), Median(scan), Percentile(scan, 0.99), Median(entry), Median(stack), attempts));
                }
                finally
                {
                    Kill(pid, shell);
                }
            }
            foreach (var row in rows)
                Console.WriteLine($"{row.Threads} threads, {row.StackKb} KiB each: {row.Bytes / 1024.0:0.#} KiB scanned; map read {Micro(row.MapMedian)} (p99 {Micro(row.MapP99)}); "
                    + $"scan with map {Micro(row.ScanMedian)} (p99 {Micro(row.ScanP99)}); apply pause entry {Micro(row.EntryPause)}, stack {Micro(row.StackPause)}");
            if (writeDocs)
                WriteDocs(root, rows, runs);
            return 0;
        }
        finally
        {
            build.Delete(recursive: true);
        }
    }

    /// <summary>Stops every thread <paramref name="runs"/> times (after 20 unmeasured) and times the mappings read and the scan inside each stop.</summary>
    private static (long Bytes, List<TimeSpan> Map, List<TimeSpan> Scan) MeasureScan(int pid, int runs)
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
    private static (List<TimeSpan> Pauses, int MaxAttempts) MeasurePause(int pid, string payload, ConsistencyModel model, int runs)
    {
        using var patcher = LivePatcher.Attach(pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(2), Consistency = model });
        // Loaded once, then applied by name: a reverted payload stays loaded.
        var name = Path.GetFileNameWithoutExtension(payload);
        patcher.Revert(patcher.List().Any(p => p.Name == name) ? patcher.ApplyLoaded(name).Payload : patcher.Apply(payload).Payload);
        var pauses = new List<TimeSpan>();
        var attempts = 0;
        for (var run = 0; run < Math.Max(runs, 5); run++)
        {
            var applied = patcher.ApplyLoaded(name);
            pauses.Add(applied.Pause);
            attempts = Math.Max(attempts, applied.Attempts);
            patcher.Revert(applied.Payload);
            Thread.Sleep(2);
        }
        return (pauses, attempts);
    }

    private static void WriteDocs(string root, List<Row> rows, int runs)
    {
        var path = Path.Combine(root, "docs", "benchmarks.md");
        var text = File.ReadAllText(path);
        var table = string.Join("\n", rows.Select(r =>
            $"| {r.Threads} | {r.StackKb} KiB | {r.Bytes / 1024.0:0.#} KiB | {Micro(r.MapMedian)} / {Micro(r.MapP99)} | {Micro(r.ScanMedian)} / {Micro(r.ScanP99)} | {Micro(r.EntryPause)} | {Micro(r.StackPause)} |"));
        var section = $"""
            <!-- stacks:begin -->
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Environment.ProcessorCount} CPUs, Linux {Environment.OSVersion.Version}, Release build: bench/stacks/target.c, its
            threads asleep in nanosleep at the stack depth shown, the main thread calling compute() every millisecond. Scan: {runs}
            stops, each timing inside the stop the stack mappings' lookup alone (open /proc/PID/maps, one PROCMAP_QUERY per thread,
            close), then the whole scan (lookup again, one /proc/PID/mem read per thread, the words compared). Pause:
            {Math.Max(runs / 4, 5)} applies of bench/pause/fix.c per model, medians of `ApplyReport.Pause`.

            | threads stopped | live stack per sleeping thread | stack bytes scanned per stop | mapping lookup, median / p99 | whole scan, median / p99 | apply pause, entry | apply pause, stack |
            | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
            {table}
            <!-- stacks:end -->
            """;
        var begin = text.IndexOf("<!-- stacks:begin -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- stacks:end -->", StringComparison.Ordinal);
        text = begin >= 0 && end > begin
            ? text[..begin] + section + text[(end + "<!-- stacks:end -->".Length)..]
            : text.TrimEnd() + "\n\n## Stack consistency: the scan inside the stop\n\n" + section + "\n";
        File.WriteAllText(path, text);
        Console.WriteLine($"stacks: wrote {path}");
    }

    private static int Start(string executable, int threads, int stackKb, out Process shell)
    {
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { "-c", "\"$0\" \"$@\"; exit $?", executable, threads.ToString(CultureInfo.InvariantCulture), stackKb.ToString(CultureInfo.InvariantCulture), "600" })
            start.ArgumentList.Add(argument);
        shell = Process.Start(start) ?? throw new InvalidOperationException("could not start /bin/sh");
        var ready = shell.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"the target printed nothing: {shell.StandardError.ReadToEnd()}");
        return int.Parse(ready.Split(' ')[1], CultureInfo.InvariantCulture);
    }

    private static void Kill(int pid, Process shell)
    {
        try
        {
            using var kill = Process.Start("kill", ["-9", pid.ToString(CultureInfo.InvariantCulture)]);
            kill.WaitForExit();
        }
        finally
        {
            shell.WaitForExit(5000);
            shell.Dispose();
        }
    }

    private static string Micro(TimeSpan value) => value.TotalMicroseconds < 100 ? $"{value.TotalMicroseconds:0.0} µs" : $"{value.TotalMicroseconds:0} µs";

    private static TimeSpan Median(List<TimeSpan> values) => Percentile(values, 0.5);

    private static TimeSpan Percentile(List<TimeSpan> values, double fraction) =>
        values.Order().ElementAt(Math.Min(values.Count - 1, (int)(values.Count * fraction)));

    private static void Gcc(string[] arguments)
    {
        var start = new ProcessStartInfo("gcc") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var gcc = Process.Start(start) ?? throw new InvalidOperationException("could not start gcc");
        var stderr = gcc.StandardError.ReadToEndAsync();
        gcc.StandardOutput.ReadToEnd();
        gcc.WaitForExit();
        if (gcc.ExitCode != 0)
            throw new InvalidOperationException($"gcc {string.Join(' ', arguments)} failed: {stderr.Result}");
    }

    private static string RepositoryRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
                if (File.Exists(Path.Combine(directory.FullName, "LivePatch.sln")) && File.Exists(Path.Combine(directory.FullName, "bench", "stacks", "target.c")))
                    return directory.FullName;
        throw new InvalidOperationException("run from inside the LivePatch repository: bench/stacks/target.c not found");
    }
}
