using LivePatch.Bench.Common;
using LivePatch.Live;
using LivePatch.Sites;

namespace LivePatch.Bench.Calls;

/// <summary>
/// <c>calls</c> mode: what one call costs through a retpoline, a plain indirect call, an <c>LP_CALL1</c> site as built,
/// the same site devirtualized by <see cref="LivePatcher.ApplyCallSites"/> (Direct backend), and the same site with
/// the native patchlet inline (Default backend) — all in one running process of bench/calls/target.c, patched between
/// measurements.
/// </summary>
internal static class CallsBenchmark
{
    public const string Usage = "usage: LivePatch.Bench calls [--iterations 2000000] [--repeats 3] [--rounds 31] [--write-docs]";

    /// <summary>The site's name in <c>.lp.callsites</c>.</summary>
    private const string SiteName = "calls.identity";

    private static readonly string[] Loops = ["retpoline", "indirect", "direct", "inline", "site"];

    private static readonly BenchmarkMode Mode = new("calls", Usage, "interrupted, ending the target", "cancelled; target ended");

    public static int Run(string[] args) => Mode.Run(args, CallsOptions.Parse, (options, cancel) =>
    {
        var root = RepositoryRoot.Find("bench/calls/target.c");
        var results = Measure(root, options, cancel);
        CallsTables.Print(results);
        if (options.WriteDocs)
            Console.Error.WriteLine($"calls: wrote {CallsDocs.Write(root, results)}");
    });

    private static CallsResults Measure(string root, CallsOptions options, CancellationToken cancel)
    {
        using var build = new BuildDirectory("calls");
        var executable = build.File("calls");
        var flags = new[] { "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-mindirect-branch=thunk", "-fcf-protection=none" };
        Gcc.Compile([.. flags, "-I", Path.Combine(root, "native", "include"), Path.Combine(root, "bench", "calls", "target.c"), "-o", executable]);
        var results = new CallsResults(options, Machine.Describe(), string.Join(' ', flags));

        using var target = CallsTarget.Start(executable, cancel);
        var listing = new LoopListing(target, executable);
        Console.Error.WriteLine($"calls: target {target.Pid} ready, bound to CPU {target.Cpu}; {options.Rounds} rounds of {options.Repeats} loops of {options.Iterations:N0} calls per loop and site state");
        results.Listings["retpoline"] = listing.LoopBody("loop_retpoline");
        results.Listings["retpoline thunk"] = listing.UpToReturn("__x86_indirect_thunk_rax");
        results.Listings["indirect"] = listing.LoopBody("loop_indirect");
        results.Listings["direct"] = listing.LoopBody("loop_direct");
        results.Listings["inline"] = listing.LoopBody("loop_inline");

        // Every round takes the site through its three states, so that the machine's drift (2 shared vCPUs) is
        // spread over all of them instead of falling on whichever state happened to be measured then.
        for (var round = 0; round < options.Rounds; round++)
        {
            results.Listings[$"site {CallsPhase.Built}"] = listing.LoopBody("loop_site");
            MeasurePhase(target, CallsPhase.Built, results, options, cancel);

            results.Choose(CallsPhase.Direct, Patch(target.Pid, CallSiteBackend.Direct, "direct call"));
            results.Listings[$"site {CallsPhase.Direct}"] = listing.LoopBody("loop_site");
            MeasurePhase(target, CallsPhase.Direct, results, options, cancel);

            results.Choose(CallsPhase.Native, Patch(target.Pid, CallSiteBackend.Default, "native patchlet lp_native_identity"));
            results.Listings[$"site {CallsPhase.Native}"] = listing.LoopBody("loop_site");
            MeasurePhase(target, CallsPhase.Native, results, options, cancel);

            Restore(target.Pid);
            results.CheckListings();
            Console.Error.WriteLine($"calls: round {round + 1} of {options.Rounds}: site {Summary(results, "c")} as built, {Summary(results, "d")} direct, {Summary(results, "e")} native (medians so far)");
        }
        return results;
    }

    /// <summary>One warm-up run of every loop, then <c>Repeats</c> runs of every loop in turn, so that drift hits all loops alike.</summary>
    private static void MeasurePhase(CallsTarget target, CallsPhase phase, CallsResults results, CallsOptions options, CancellationToken cancel)
    {
        foreach (var loop in Loops)
            target.Run(loop, options.Iterations, cancel);
        for (var repeat = 0; repeat < options.Repeats; repeat++)
        {
            foreach (var loop in Loops)
            {
                cancel.ThrowIfCancellationRequested();
                var (nanoseconds, ticks) = target.Run(loop, options.Iterations, cancel);
                results.Add(phase, loop, new CallSample((double)nanoseconds / options.Iterations, (double)ticks / options.Iterations));
            }
        }
    }

    /// <summary>Rewrites the target's call site, which holds its indirect call, with <paramref name="backend"/> and checks what it became.</summary>
    private static CallsChoice Patch(int pid, CallSiteBackend backend, string expected)
    {
        // Detached again before measuring: nothing of the patcher stays in the target's way.
        using var patcher = SitePatcher.Attach(pid, new SitePatcherOptions { Timeout = TimeSpan.FromSeconds(1) });
        // Sites are rewritten only from their indirect call: put it back first if the site holds another choice.
        patcher.RestoreCallSites();
        var report = patcher.ApplyCallSites(backend);
        var choice = report.Choices.SingleOrDefault(c => c.Name == SiteName)
            ?? throw new InvalidOperationException($"the calls target has no call site {SiteName}: {string.Join(", ", report.Choices.Select(c => c.Name))}");
        if (report.Written != 1 || !choice.Reason.Contains(expected, StringComparison.Ordinal))
            throw new InvalidOperationException($"{backend} backend: {report.Written} site(s) written, {SiteName}: {choice.Reason}; expected one site written, '{expected}'");
        return new CallsChoice(backend.ToString(), choice.Reason, report.Pause);
    }

    /// <summary>Puts the site's indirect call back, for the next round.</summary>
    private static void Restore(int pid)
    {
        using var patcher = SitePatcher.Attach(pid, new SitePatcherOptions { Timeout = TimeSpan.FromSeconds(1) });
        if (patcher.RestoreCallSites().Written != 1)
            throw new InvalidOperationException($"restoring {SiteName} wrote nothing: it already held its indirect call");
    }

    private static string Summary(CallsResults results, string row) => CallsTables.Ns(results.Series(row).Median.Nanoseconds);
}

/// <summary>Command-line options of <c>calls</c>.</summary>
internal sealed record CallsOptions(long Iterations, int Repeats, int Rounds, bool WriteDocs)
{
    public static CallsOptions Parse(OptionReader options)
    {
        long iterations = 2_000_000;
        var repeats = 3;
        var rounds = 31;
        var writeDocs = false;
        while (options.Next() is { } option)
        {
            switch (option)
            {
                case "--iterations": iterations = options.PositiveLong(); break;
                case "--repeats": repeats = options.PositiveInt(); break;
                case "--rounds": rounds = options.PositiveInt(); break;
                case "--write-docs": writeDocs = true; break;
                default: throw options.Unknown();
            }
        }
        return new CallsOptions(iterations, repeats, rounds, writeDocs);
    }
}
