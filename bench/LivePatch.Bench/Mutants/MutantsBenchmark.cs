using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;
using LivePatch.Live;
using LivePatch.Tests.Payloads;

namespace LivePatch.Bench.Mutants;

/// <summary>
/// <c>mutants</c> mode, the long run of the test <c>PayloadMutationPropertyTests</c> (issue 12, part 2): corrupted
/// payloads (the test's <see cref="PayloadMutants"/>, from tests/fixtures/live/mutants) through load, check, apply,
/// revert and unload against one idle target (tests/fixtures/targets/idle.c), attached once. Fails on the first
/// exception that is not the library's own, a refusal of more than one line, a refused apply that left a record,
/// or a target that died or changed; prints the counts and the time.
/// </summary>
internal static partial class MutantsBenchmark
{
    public const string Usage = "usage: LivePatch.Bench mutants [--count 100000] [--seed 1] [--write-docs]";

    private static readonly BenchmarkMode Mode = new("mutants", Usage, "interrupted, ending the target", "cancelled; target ended");

    /// <summary>The ready line's groups naming the functions whose code must not change.</summary>
    private static readonly string[] Watched = ["first", "second", "helper"];

    private static readonly (string Source, string Flags)[] Bases =
    [
        ("tests/fixtures/live/mutants/base.c", "-O2 -fPIC"),
        ("tests/fixtures/live/mutants/base.c", "-O0 -fPIC"),
        ("tests/fixtures/live/mutants/base.c", "-O2 -fno-pic"),
        ("tests/fixtures/live/mutants/hooked.c", "-O2 -fPIC"),
    ];

    public static int Run(string[] args) => Mode.Run(args, MutantsOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("tests/fixtures/targets/idle.c");
        using var build = new BuildDirectory("mutants");
        var executable = build.File("idle");
        Gcc.Compile(["-O2", "-g", Path.Combine(root, "tests/fixtures/targets/idle.c"), "-o", executable]);
        var originals = Bases.Select((b, i) =>
        {
            var output = build.File($"base{i}.o");
            Gcc.Compile(["-c", .. b.Flags.Split(' '), "-ffunction-sections", "-I", Path.Combine(root, "native", "include"), Path.Combine(root, b.Source), "-o", output]);
            return File.ReadAllBytes(output);
        }).ToArray();
        var mutants = originals.Select(o => new PayloadMutants(o)).ToArray();

        using var target = ShellTarget.Start("idle target", executable, [], ReadyLine(), cancel);
        using var patcher = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(2) });
        new MutantCampaign(patcher, "mutant.o").Run(new PayloadMutant(originals[0], "unmutated"));
        var watched = Watched.Select(n => Convert.ToUInt64(target.Ready.Groups[n].Value, 16)).ToArray();
        var code = watched.Select(a => target.ReadMemory(a, 32)).ToArray();
        var maps = File.ReadAllText($"/proc/{target.Pid}/maps");

        var campaign = new MutantCampaign(patcher, "mutant.o");
        var random = new Random(options.Seed);
        var clock = Stopwatch.StartNew();
        for (var round = 0L; round < options.Count; round++)
        {
            cancel.ThrowIfCancellationRequested();
            var mutant = mutants[round % mutants.Length].Next(random);
            try
            {
                campaign.Run(mutant);
            }
            catch (Exception error)
            {
                throw new InvalidOperationException($"seed {options.Seed}, mutant {round} ({mutant.Description}): {error.GetType().Name}: {error.Message} at {error.StackTrace?.Split('\n').FirstOrDefault()?.Trim()}");
            }

            if (!Directory.Exists($"/proc/{target.Pid}"))
                throw new InvalidOperationException($"seed {options.Seed}, mutant {round} ({mutant.Description}): the target died");
            if ((round + 1) % 10_000 == 0)
                Console.Error.WriteLine($"mutants: {round + 1:N0} in {clock.Elapsed.TotalSeconds:0} s");
        }

        var elapsed = clock.Elapsed;
        var unchanged = patcher.List().Count == 0 && watched.Select(a => target.ReadMemory(a, 32)).Zip(code).All(p => p.First.AsSpan().SequenceEqual(p.Second))
            && File.ReadAllText($"/proc/{target.Pid}/maps") == maps;
        var counts = campaign.Counts;
        Console.WriteLine($"seed {options.Seed}: {counts} in {elapsed.TotalSeconds:0.0} s ({elapsed.TotalMicroseconds / counts.Total:0} µs per mutant); target {(unchanged ? "unchanged" : "CHANGED")}");
        foreach (var (type, (count, example)) in counts.Exceptions.OrderByDescending(e => e.Value.Count))
            Console.WriteLine($"  {type} x{count:N0}, e.g. {example}");
        if (!unchanged)
            throw new InvalidOperationException("the target's code, mappings or record changed");
        if (options.WriteDocs)
            Console.WriteLine($"mutants: wrote {WriteDocs(root, counts, elapsed, options)}");
    });

    private static string WriteDocs(string root, MutantCounts counts, TimeSpan elapsed, MutantsOptions options)
    {
        string Row(string what, long count) => $"| {what} | {count.ToString("N0", CultureInfo.InvariantCulture)} | {100.0 * count / counts.Total:0.0} % |";
        var exceptions = string.Join("\n", counts.Exceptions.OrderByDescending(e => e.Value.Count).Select(e => $"| `{e.Key}` | {e.Value.Count.ToString("N0", CultureInfo.InvariantCulture)} |"));
        var section = $"""
            Measured {DateTime.UtcNow:yyyy-MM-dd} on {Machine.Describe()}, Release build
            (`dotnet run -c Release --project bench/LivePatch.Bench -- mutants --count {options.Count} --seed {options.Seed} --write-docs`):
            {counts.Total.ToString("N0", CultureInfo.InvariantCulture)} mutants in {elapsed.TotalSeconds:0} s ({elapsed.TotalMicroseconds / counts.Total:0} µs per mutant), no exception but the library's own,
            every refusal one line, the target alive and, at the end, with the code, mappings and record it had at the start.

            | what became of a mutant | mutants | share |
            | --- | ---: | ---: |
            {Row("refused at load (`PayloadException`)", counts.RefusedAtLoad)}
            {Row("loaded, refused by check", counts.RefusedAtCheck)}
            {Row("checked, refused by apply", counts.RefusedAtApply)}
            {Row("applied, reverted and unloaded", counts.Applied)}
            {Row("has a hook, checked, refused by load into the target", counts.RefusedAtTargetLoad)}
            {Row("has a hook, checked, loaded into the target and unloaded (never applied: the hook would run)", counts.LoadedWithHooks)}

            | exception | refusals |
            | --- | ---: |
            {exceptions}

            """;
        return BenchmarksDocument.ReplaceSection(root, "mutants", section);
    }

    [GeneratedRegex(@"^ready (\d+) idle_first=(?<first>0x[0-9a-f]+) idle_second=(?<second>0x[0-9a-f]+) idle_helper=(?<helper>0x[0-9a-f]+)$")]
    private static partial Regex ReadyLine();
}

/// <summary>Command-line options of <c>mutants</c>.</summary>
internal sealed record MutantsOptions(long Count, int Seed, bool WriteDocs)
{
    public static MutantsOptions Parse(OptionReader options)
    {
        var count = 100_000L;
        var seed = 1;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--count": count = options.PositiveLong(); break;
                case "--seed": seed = options.PositiveInt(); break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new MutantsOptions(count, seed, writeDocs);
    }
}
