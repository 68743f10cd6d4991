using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
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

    public static int Run(string[] args)
    {
        CallsOptions options;
        try
        {
            options = CallsOptions.Parse(args);
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
            // Leave through the finally blocks, which end the target.
            e.Cancel = true;
            Console.Error.WriteLine("calls: interrupted, ending the target");
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
            var results = Measure(root, options, cancel.Token);
            CallsTables.Print(results);
            if (options.WriteDocs)
            {
                var docs = Path.Combine(root, "docs", "benchmarks.md");
                CallsDocs.Write(docs, results);
                Console.Error.WriteLine($"calls: wrote {docs}");
            }
            return 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("calls: cancelled; target ended");
            return 130;
        }
        catch (Exception e)
        {
            // Caught here, not left unhandled, so that every finally (end the target, remove the build) runs.
            Console.Error.WriteLine($"calls: {e.GetType().Name}: {e.Message}");
            return 1;
        }
        finally
        {
            Console.CancelKeyPress -= onCtrlC;
        }
    }

    private static CallsResults Measure(string root, CallsOptions options, CancellationToken cancel)
    {
        var build = Directory.CreateTempSubdirectory("livepatch-calls-");
        try
        {
            var executable = Path.Combine(build.FullName, "calls");
            var flags = new[] { "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-mindirect-branch=thunk", "-fcf-protection=none" };
            Gcc([.. flags, "-I", Path.Combine(root, "native", "include"), Path.Combine(root, "bench", "calls", "target.c"), "-o", executable]);
            var results = new CallsResults(options, CallsMachine.Describe(), string.Join(' ', flags));

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
        finally
        {
            build.Delete(recursive: true);
        }
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
        using var patcher = LivePatcher.Attach(pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(1) });
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
        using var patcher = LivePatcher.Attach(pid, new LivePatchOptions { Timeout = TimeSpan.FromSeconds(1) });
        if (patcher.RestoreCallSites().Written != 1)
            throw new InvalidOperationException($"restoring {SiteName} wrote nothing: it already held its indirect call");
    }

    private static string Summary(CallsResults results, string row) => CallsTables.Ns(results.Series(row).Median.Nanoseconds);

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
                if (File.Exists(Path.Combine(directory.FullName, "LivePatch.sln")) && File.Exists(Path.Combine(directory.FullName, "bench", "calls", "target.c")))
                    return directory.FullName;
            }
        }
        throw new InvalidOperationException("run from inside the LivePatch repository: bench/calls/target.c not found");
    }
}

/// <summary>Command-line options of <c>calls</c>.</summary>
internal sealed record CallsOptions(long Iterations, int Repeats, int Rounds, bool WriteDocs)
{
    public static CallsOptions Parse(string[] args)
    {
        long iterations = 2_000_000;
        var repeats = 3;
        var rounds = 31;
        var writeDocs = false;
        for (var i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--iterations": iterations = Positive(Value(), "--iterations"); break;
                case "--repeats": repeats = checked((int)Positive(Value(), "--repeats")); break;
                case "--rounds": rounds = checked((int)Positive(Value(), "--rounds")); break;
                case "--write-docs": writeDocs = true; break;
                default: throw new FormatException($"unknown option {args[i]}");
            }
        }
        return new CallsOptions(iterations, repeats, rounds, writeDocs);
    }

    private static long Positive(string text, string option) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > 0
            ? value
            : throw new FormatException($"{option}: '{text}' is not a positive integer");
}
