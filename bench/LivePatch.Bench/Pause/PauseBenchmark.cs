using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace LivePatch.Bench.Pause;

/// <summary>
/// <c>pause</c> mode: how long a live patch holds a busy target's threads, measured inside the target, against the
/// same 5-byte write done with <c>gdb -p PID -batch</c>.
/// </summary>
internal static class PauseBenchmark
{
    public const string Usage = "usage: LivePatch.Bench pause [--runs 50] [--gdb-runs 25] [--threads 1,8,64] [--idle-ms 20] [--timeout-ms 30] [--no-gdb] [--write-docs]";

    public static int Run(string[] args)
    {
        PauseOptions options;
        try
        {
            options = PauseOptions.Parse(args);
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
            // Never abandon a stop half-done: finish the current operation, then clean up and leave.
            e.Cancel = true;
            Console.Error.WriteLine("pause: interrupted, cleaning up after the current operation");
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
            var root = RepositoryRoot();
            var machine = Machine.Describe();
            var results = Measure(root, options, cancel.Token);
            PauseTables.Print(results, options);
            if (options.WriteDocs)
            {
                var docs = Path.Combine(root, "docs", "benchmarks.md");
                PauseDocs.Write(docs, results, options, machine);
                Console.Error.WriteLine($"pause: wrote {docs}");
            }
            return 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("pause: cancelled; target killed and shared memory removed");
            return 130;
        }
        catch (Exception e)
        {
            // Caught here, not left unhandled, so that every finally (kill the target, remove /dev/shm files) runs.
            Console.Error.WriteLine($"pause: {e.GetType().Name}: {e.Message}");
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCtrlC;
        }
    }

    private static List<ThreadCountResult> Measure(string root, PauseOptions options, CancellationToken cancel)
    {
        if (!options.NoGdb)
            GdbBaseline.Require();
        var build = Directory.CreateTempSubdirectory("livepatch-pause-");
        try
        {
            var target = Path.Combine(build.FullName, "target");
            var payload = Path.Combine(build.FullName, "fix.o");
            Gcc(["-O2", "-pthread", Path.Combine(root, "bench", "pause", "target.c"), "-o", target]);
            Gcc(["-c", "-O2", "-fPIC", "-ffunction-sections", "-I", Path.Combine(root, "native", "include"), Path.Combine(root, "bench", "pause", "fix.c"), "-o", payload]);

            var results = new List<ThreadCountResult>();
            foreach (var threads in options.Threads)
            {
                cancel.ThrowIfCancellationRequested();
                var result = new ThreadCountResult(threads);
                results.Add(result);
                Console.Error.WriteLine($"pause: {threads} busy thread(s)");
                using var running = PauseTarget.Start(target, threads, lifetime: TimeSpan.FromMinutes(10));
                Thread.Sleep(options.Warmup);
                MeasureIdle(running, result.Idle, options, cancel);
                LivePatcherRuns.Measure(running, payload, result, options, cancel);
                if (!options.NoGdb)
                    MeasureGdb(running, result.Gdb, options, cancel);
            }
            return results;
        }
        finally
        {
            build.Delete(recursive: true);
        }
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
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "LivePatch.sln")) && File.Exists(Path.Combine(directory.FullName, "bench", "pause", "target.c")))
                    return directory.FullName;
            }
        }
        throw new InvalidOperationException("run from inside the LivePatch repository: bench/pause/target.c not found");
    }
}

/// <summary>Command-line options of <c>pause</c>.</summary>
internal sealed record PauseOptions(int Runs, int GdbRuns, int[] Threads, TimeSpan Idle, TimeSpan Timeout, TimeSpan Warmup, bool NoGdb, bool WriteDocs)
{
    public static PauseOptions Parse(string[] args)
    {
        int runs = 50;
        int? gdbRuns = null;
        int[] threads = [1, 8, 64];
        var idle = TimeSpan.FromMilliseconds(20);
        var timeout = TimeSpan.FromMilliseconds(30); // the engine's default, as Xen's
        bool noGdb = false, writeDocs = false;
        for (var i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--runs": runs = Positive(Value(), "--runs"); break;
                case "--gdb-runs": gdbRuns = Positive(Value(), "--gdb-runs"); break;
                case "--threads": threads = [.. Value().Split(',').Select(t => Positive(t, "--threads"))]; break;
                case "--idle-ms": idle = TimeSpan.FromMilliseconds(Positive(Value(), "--idle-ms")); break;
                case "--timeout-ms": timeout = TimeSpan.FromMilliseconds(Positive(Value(), "--timeout-ms")); break;
                case "--no-gdb": noGdb = true; break;
                case "--write-docs": writeDocs = true; break;
                default: throw new FormatException($"unknown option {args[i]}");
            }
        }
        // gdb takes about 3 s per write at 64 busy threads on 2 CPUs: 25 keeps a full run under 5 minutes.
        return new PauseOptions(runs, gdbRuns ?? Math.Min(runs, 25), threads, idle, timeout, TimeSpan.FromMilliseconds(500), noGdb, writeDocs);
    }

    private static int Positive(string text, string option) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > 0
            ? value
            : throw new FormatException($"{option}: '{text}' is not a positive integer");
}
