using System.Diagnostics;
using System.Globalization;
using System.Text;
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
internal static class ManySitesBenchmark
{
    private const int SitesPerFunction = 100;

    public static int Run(string[] args)
    {
        var count = 100_000;
        var writeDocs = false;
        for (var i = 0; i < args.Length; i++)
        {
            if (args[i] == "--count" && i + 1 < args.Length)
                count = int.Parse(args[++i], CultureInfo.InvariantCulture);
            else if (args[i] == "--write-docs")
                writeDocs = true;
        }
        count = Math.Max(SitesPerFunction, count / SitesPerFunction * SitesPerFunction);
        var directory = Directory.CreateTempSubdirectory("livepatch-sites-bench-").FullName;
        try
        {
            var executable = Build(directory, count);
            var (read, choose, sites) = MeasureRead(executable);
            Console.WriteLine($"read and validate {sites:N0} sites: median {read.TotalMilliseconds:0.0} ms; choose for this CPU: {choose.TotalMilliseconds:0.0} ms");
            var runs = new List<(TimeSpan Pause, TimeSpan Total, int Written)>();
            for (var run = 0; run < 5; run++)
                runs.Add(MeasureApply(executable));
            foreach (var (pause, total, written) in runs)
                Console.WriteLine($"apply: {written:N0} sites written, pause {pause.TotalMilliseconds:0.00} ms, total {total.TotalMilliseconds:0} ms");
            if (writeDocs)
                WriteDocs(count, read, choose, runs);
            return 0;
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static string Build(string directory, int count)
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
        var path = Path.Combine(directory, "many.c");
        File.WriteAllText(path, source.ToString());
        var include = Path.Combine(FindRepository(), "native", "include");
        Run("gcc", "-O1", "-I", include, path, "-o", Path.Combine(directory, "many"));
        return Path.Combine(directory, "many");
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

    private static (TimeSpan Pause, TimeSpan Total, int Written) MeasureApply(string executable)
    {
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { "-c", "\"$0\"; exit $?", executable })
            start.ArgumentList.Add(argument);
        using var shell = Process.Start(start)!;
        var pid = 0;
        try
        {
            var ready = shell.StandardOutput.ReadLine() ?? "";
            pid = int.Parse(ready["ready ".Length..], CultureInfo.InvariantCulture);
            Thread.Sleep(200);
            var began = Stopwatch.GetTimestamp();
            using var patcher = LivePatcher.Attach(pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(2) });
            var report = patcher.ApplyAlternatives();
            return (report.Pause, Stopwatch.GetElapsedTime(began), report.Written);
        }
        finally
        {
            if (pid > 0)
                Run("kill", "-9", pid.ToString(CultureInfo.InvariantCulture));
            shell.WaitForExit(5000);
        }
    }

    private static void WriteDocs(int count, TimeSpan read, TimeSpan choose, List<(TimeSpan Pause, TimeSpan Total, int Written)> runs)
    {
        var path = Path.Combine(FindRepository(), "docs", "benchmarks.md");
        var text = File.ReadAllText(path);
        var pauses = runs.Select(r => r.Pause).ToList();
        var totals = runs.Select(r => r.Total).ToList();
        var section = $"""
            <!-- sites:begin -->
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Environment.ProcessorCount} CPUs: a generated program with {count:N0} `LP_ALTERNATIVE` popcnt sites
            (100 per function, gcc -O1), one thread running through all of them every millisecond; 5 applies, each to a
            freshly started program.

            | step | median | worst |
            | --- | ---: | ---: |
            | read and validate the tables (`ElfFile.Load` + `SiteTables.Read`, {count:N0} sites, 7 runs) | {read.TotalMilliseconds:0.0} ms | — |
            | choose for this CPU (`SiteChooser.Choose`, 7 runs) | {choose.TotalMilliseconds:0.0} ms | — |
            | apply all sites: pause (threads held) | {Median(pauses).TotalMilliseconds:0.00} ms | {pauses.Max().TotalMilliseconds:0.00} ms |
            | apply all sites: total (attach, read, choose, relocate, stop, write, detach) | {Median(totals).TotalMilliseconds:0} ms | {totals.Max().TotalMilliseconds:0} ms |
            <!-- sites:end -->
            """;
        var begin = text.IndexOf("<!-- sites:begin -->", StringComparison.Ordinal);
        var end = text.IndexOf("<!-- sites:end -->", StringComparison.Ordinal);
        text = begin >= 0 && end > begin
            ? text[..begin] + section + text[(end + "<!-- sites:end -->".Length)..]
            : text.TrimEnd() + "\n\n## Applying 100,000 alternatives\n\nReproduce: `dotnet run -c Release --project bench/LivePatch.Bench -- sites --write-docs` (about a minute; gcc takes most of it).\n\n" + section + "\n";
        File.WriteAllText(path, text);
        Console.WriteLine($"sites: wrote {path}");
    }

    private static TimeSpan Median(List<TimeSpan> values) => values.Order().ElementAt(values.Count / 2);

    private static void Run(string program, params string[] arguments)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start)!;
        var errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0 && program != "kill")
            throw new InvalidOperationException($"{program} failed: {errors}");
    }

    private static string FindRepository()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
            if (File.Exists(Path.Combine(directory.FullName, "LivePatch.sln")))
                return directory.FullName;
        throw new InvalidOperationException("run the benchmark from a clone of the repository");
    }
}
