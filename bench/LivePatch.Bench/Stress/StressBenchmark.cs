using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;
using LivePatch.Live;
using LivePatch.Targets;

namespace LivePatch.Bench.Stress;

/// <summary>
/// <c>stress</c> mode: apply and revert, as many cycles as fit in the time given, on targets of every shape the tests
/// use for issue 10, each with eight busy threads: a function whose loop branches back into its first bytes (-Os),
/// a static function whose callers keep values in registers it never writes (-O2 -fipa-ra, the payload needing a
/// callee-save thunk), and a plain -O2 function with CET landing pads (threads moved to trampolines). Reports cycles,
/// stops that timed out (nothing changed), wrong results the targets counted, and crashes.
/// </summary>
internal static partial class StressBenchmark
{
    public const string Usage = "usage: LivePatch.Bench stress [--minutes 10] [--threads 8] [--write-docs]";

    private sealed record Shape(string Name, string What, string Source, string Flags, string Payload);

    private sealed record Row(Shape Shape, long Cycles, long Timeouts, long? Wrong, bool Crashed, TimeSpan MedianPause, TimeSpan Elapsed, string? Keeps);

    private static readonly Shape[] Shapes =
    [
        new("loops", "sum_to loops back into its first bytes (-Os)", "tests/fixtures/targets/loops.c", "-Os -g -pthread", "tests/fixtures/live/apply/loop_fix.c"),
        new("ipara", "static scale's callers keep values in registers it never writes (-O2)", "tests/fixtures/targets/ipara.c", "-O2 -g -pthread", "tests/fixtures/live/apply/ipa_fix.c"),
        new("worker", "plain -O2 function, endbr64, threads moved to trampolines", "tests/fixtures/targets/worker.c", "-O2 -g -pthread -fcf-protection=full", "tests/fixtures/live/apply/fix.c"),
    ];

    private static readonly BenchmarkMode Mode = new("stress", Usage, "interrupted, ending the target", "cancelled; target ended");

    public static int Run(string[] args) => Mode.Run(args, StressOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("tests/fixtures/targets/loops.c");
        using var build = new BuildDirectory("stress");
        var each = options.Duration / Shapes.Length;
        var rows = new List<Row>();
        foreach (var shape in Shapes)
        {
            cancel.ThrowIfCancellationRequested();
            var executable = build.File(shape.Name);
            var payload = build.File(Path.GetFileNameWithoutExtension(shape.Payload) + ".o");
            Gcc.Compile([.. shape.Flags.Split(' '), Path.Combine(root, shape.Source), "-o", executable]);
            Gcc.CompilePayload(root, shape.Payload, payload);
            Console.Error.WriteLine($"stress: {shape.Name}, {options.Threads} threads, {each.TotalSeconds:0} s");
            rows.Add(Cycle(shape, executable, payload, options.Threads, each, cancel));
        }
        foreach (var row in rows)
            Console.WriteLine($"{row.Shape.Name}: {row.Cycles} apply/revert cycles in {row.Elapsed.TotalSeconds:0} s, {row.Timeouts} stops timed out, "
                + $"{(row.Wrong is { } wrong ? $"{wrong} wrong results" : "results not counted")}, {(row.Crashed ? "CRASHED" : "no crash")}, median apply pause {Micro(row.MedianPause)}"
                + (row.Keeps is null ? "" : $", thunk keeping {row.Keeps}"));
        if (options.WriteDocs)
            Console.WriteLine($"stress: wrote {WriteDocs(root, rows, options)}");
        if (rows.Any(r => r.Crashed || r.Wrong is > 0))
            throw new InvalidOperationException("a target crashed or computed wrong results");
    });

    private static Row Cycle(Shape shape, string executable, string payload, int threads, TimeSpan duration, CancellationToken cancel)
    {
        using var target = ShellTarget.Start($"{shape.Name} target", executable, [threads.ToString(CultureInfo.InvariantCulture)], ReadyLine(), cancel);
        var wrongAt = target.Ready.Groups["wrong"].Success ? Convert.ToUInt64(target.Ready.Groups["wrong"].Value, 16) : (ulong?)null;
        using var patcher = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(2) });
        var name = patcher.Load(payload).Payload;
        var keeps = patcher.List().Single().Functions.Single().Keeps;
        var clock = Stopwatch.StartNew();
        var pauses = new List<TimeSpan>();
        long cycles = 0, timeouts = 0;
        var crashed = false;
        try
        {
            while (clock.Elapsed < duration && !cancel.IsCancellationRequested)
            {
                try
                {
                    pauses.Add(patcher.ApplyLoaded(name).Pause);
                }
                catch (TargetException error) when (error.Error == TargetError.Timeout)
                {
                    timeouts++;
                    continue;
                }
                while (true)
                {
                    try
                    {
                        patcher.Revert(name);
                        break;
                    }
                    catch (TargetException error) when (error.Error == TargetError.Timeout)
                    {
                        timeouts++;
                    }
                }
                cycles++;
            }
        }
        catch (TargetException error) when (error.Error == TargetError.Exited)
        {
            crashed = true;
        }
        crashed |= !Directory.Exists($"/proc/{target.Pid}") || File.ReadAllText($"/proc/{target.Pid}/stat").Contains(") Z", StringComparison.Ordinal);
        long? wrong = crashed || wrongAt is null ? null : BitConverter.ToInt64(target.ReadMemory(wrongAt.Value, 8));
        return new Row(shape, cycles, timeouts, wrong, crashed, pauses.Count == 0 ? TimeSpan.Zero : pauses.Order().ElementAt(pauses.Count / 2), clock.Elapsed, keeps);
    }

    private static string WriteDocs(string root, List<Row> rows, StressOptions options)
    {
        var table = string.Join("\n", rows.Select(r =>
            $"| {r.Shape.Name} | {r.Shape.What} | {r.Cycles:N0} | {r.Timeouts:N0} | {(r.Wrong is { } w ? w.ToString("N0", CultureInfo.InvariantCulture) : "not counted")} | {(r.Crashed ? "**crashed**" : "0")} | {Micro(r.MedianPause)} | {r.Keeps ?? "-"} |"));
        var section = $"""
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Machine.Describe()}, Release build, {options.Threads} busy threads per target,
            {options.Duration.TotalMinutes:0.#} minutes shared between the targets (`dotnet run -c Release --project bench/LivePatch.Bench -- stress --minutes {options.Duration.TotalMinutes:0.#} --write-docs`).
            One cycle is an apply by name and a revert of the loaded payload; a stop that times out (a thread stayed where it
            must not be for 2 s) changes nothing and is counted, not failed. Wrong results are counted by the targets themselves.

            | target | shape | cycles | stops timed out | wrong results | crashes | median apply pause | thunk keeps |
            | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |
            {table}

            """;
        return BenchmarksDocument.ReplaceSection(root, "stress", section);
    }

    private static string Micro(TimeSpan value) => value.TotalMicroseconds < 100 ? $"{value.TotalMicroseconds:0.0} µs" : $"{value.TotalMicroseconds:0} µs";

    [GeneratedRegex(@"^ready (\d+) .*?(?:wrong=(?<wrong>0x[0-9a-f]+))?$")]
    private static partial Regex ReadyLine();
}

/// <summary>Command-line options of <c>stress</c>.</summary>
internal sealed record StressOptions(TimeSpan Duration, int Threads, bool WriteDocs)
{
    public static StressOptions Parse(OptionReader options)
    {
        var minutes = 10;
        var threads = 8;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--minutes": minutes = options.PositiveInt(); break;
                case "--threads": threads = options.PositiveInts()[0]; break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new StressOptions(TimeSpan.FromMinutes(minutes), threads, writeDocs);
    }
}
