using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Sites;
using LivePatch.X86;

namespace LivePatch.Bench.Sites;

/// <summary>
/// <c>dotnet run -c Release --project bench/LivePatch.Bench -- sites [--count 100000] [--write-docs]</c>: a generated
/// program with COUNT <c>LP_ALTERNATIVE</c> sites (popcnt), built with gcc; measures reading and validating its
/// tables, then applying every site to the running program in one stop (pause and total).
/// </summary>
internal static partial class ManySitesBenchmark
{
    public const string Usage = "usage: LivePatch.Bench sites [--count 100000] [--write-docs]";

    private const int SitesPerFunction = 100;

    private static readonly BenchmarkMode Mode = new("sites", Usage, "interrupted, ending the program", "cancelled; program ended");

    public static int Run(string[] args) => Mode.Run(args, SitesOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("native/include/livepatch/sites.h");
        var count = Math.Max(SitesPerFunction, options.Count / SitesPerFunction * SitesPerFunction);
        using var build = new BuildDirectory("sites");
        var executable = Build(root, build, count);
        var (read, choose, sites) = MeasureRead(executable);
        Console.WriteLine($"read and validate {sites:N0} sites: median {read.TotalMilliseconds:0.0} ms; choose for this CPU: {choose.TotalMilliseconds:0.0} ms");
        var runs = new List<(TimeSpan Pause, TimeSpan Total, int Written)>();
        for (var run = 0; run < 5; run++)
        {
            cancel.ThrowIfCancellationRequested();
            runs.Add(MeasureApply(executable, cancel));
        }
        foreach (var (pause, total, written) in runs)
            Console.WriteLine($"apply: {written:N0} sites written, pause {pause.TotalMilliseconds:0.00} ms, total {total.TotalMilliseconds:0} ms");
        if (options.WriteDocs)
            Console.WriteLine($"sites: wrote {WriteDocs(root, count, read, choose, runs)}");
    });

    private static string Build(string root, BuildDirectory build, int count)
    {
        var source = new StringBuilder("#include <livepatch/sites.h>\n#include <stdio.h>\n#include <unistd.h>\nvolatile unsigned sink;\n");
        var functions = count / SitesPerFunction;
        for (var f = 0; f < functions; f++)
        {
            source.Append(CultureInfo.InvariantCulture, $"__attribute__((noipa)) void f{f}(unsigned x) {{ unsigned r;\n");
            for (var i = 0; i < SitesPerFunction; i++)
                source.Append("  __asm__ __volatile__(LP_ALTERNATIVE(\"mov %1, %0\", \"popcnt %1, %0\", LP_FEATURE_POPCNT) : \"=r\"(r) : \"r\"(x)); sink = r;\n");
            source.Append("}\n");
        }
        source.Append("typedef void (*fn)(unsigned);\nstatic fn all[] = {");
        source.AppendJoin(',', Enumerable.Range(0, functions).Select(f => $"f{f}"));
        source.Append("};\nint main(void) { setvbuf(stdout, NULL, _IOLBF, 0); printf(\"ready %d\\n\", getpid());\n"
            + "  for (unsigned k = 0;; k++) { for (unsigned i = 0; i < sizeof all / sizeof *all; i++) all[i](k); usleep(1000); } }\n");
        var path = build.File("many.c");
        File.WriteAllText(path, source.ToString());
        Gcc.Compile(["-O1", "-I", Path.Combine(root, "native", "include"), path, "-o", build.File("many")]);
        return build.File("many");
    }

    private static (TimeSpan Read, TimeSpan Choose, int Sites) MeasureRead(string executable)
    {
        var cpu = CpuFeatures.Detect();
        var reads = new List<TimeSpan>();
        var chooses = new List<TimeSpan>();
        var sites = 0;
        for (var run = 0; run < 7; run++)
        {
            var start = Stopwatch.GetTimestamp();
            var file = ElfFile.Load(executable);
            sites = SiteTables.Read(file).Alternatives.Count;
            reads.Add(Stopwatch.GetElapsedTime(start));
            start = Stopwatch.GetTimestamp();
            SiteChooser.Choose(file, cpu);
            chooses.Add(Stopwatch.GetElapsedTime(start));
        }
        return (Median(reads), Median(chooses), sites);
    }

    private static (TimeSpan Pause, TimeSpan Total, int Written) MeasureApply(string executable, CancellationToken cancel)
    {
        using var program = ShellTarget.Start("sites program", executable, [], ReadyLine(), cancel);
        Thread.Sleep(200);
        var began = Stopwatch.GetTimestamp();
        using var patcher = SitePatcher.Attach(program.Pid, new SitePatcherOptions { Timeout = TimeSpan.FromSeconds(2) });
        var report = patcher.ApplyAlternatives();
        return (report.Pause, Stopwatch.GetElapsedTime(began), report.Written);
    }

    /// <summary>Replaces the sites section of docs/benchmarks.md and returns the file's path.</summary>
    private static string WriteDocs(string root, int count, TimeSpan read, TimeSpan choose, List<(TimeSpan Pause, TimeSpan Total, int Written)> runs)
    {
        var pauses = runs.Select(r => r.Pause).ToList();
        var totals = runs.Select(r => r.Total).ToList();
        var section = $"""
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Environment.ProcessorCount} CPUs: a generated program with {count:N0} `LP_ALTERNATIVE` popcnt sites
            (100 per function, gcc -O1), one thread running through all of them every millisecond; 5 applies, each to a
            freshly started program.

            | step | median | worst |
            | --- | ---: | ---: |
            | read and validate the tables (`ElfFile.Load` + `SiteTables.Read`, {count:N0} sites, 7 runs) | {read.TotalMilliseconds:0.0} ms | — |
            | choose for this CPU (`SiteChooser.Choose`, 7 runs) | {choose.TotalMilliseconds:0.0} ms | — |
            | apply all sites: pause (threads held) | {Median(pauses).TotalMilliseconds:0.00} ms | {pauses.Max().TotalMilliseconds:0.00} ms |
            | apply all sites: total (attach, read, choose, relocate, stop, write, detach) | {Median(totals).TotalMilliseconds:0} ms | {totals.Max().TotalMilliseconds:0} ms |

            """;
        return BenchmarksDocument.ReplaceSection(root, "sites", section);
    }

    private static TimeSpan Median(List<TimeSpan> values) => values.Order().ElementAt(values.Count / 2);

    [GeneratedRegex(@"^ready (\d+)$")]
    private static partial Regex ReadyLine();
}

/// <summary>Command-line options of <c>sites</c>.</summary>
internal sealed record SitesOptions(int Count, bool WriteDocs)
{
    public static SitesOptions Parse(OptionReader options)
    {
        var count = 100_000;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--count": count = options.PositiveInt(); break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new SitesOptions(count, writeDocs);
    }
}
