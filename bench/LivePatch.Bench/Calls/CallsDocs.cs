using System.Globalization;
using System.Text;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Calls;

/// <summary>Writes the measured part of docs/benchmarks.md, between <c>&lt;!-- calls:begin --&gt;</c> and <c>&lt;!-- calls:end --&gt;</c>.</summary>
internal static class CallsDocs
{
    /// <summary>Replaces the section and returns the file's path.</summary>
    public static string Write(string root, CallsResults results) => BenchmarksDocument.ReplaceSection(root, "calls", Section(results));

    private static string Section(CallsResults results)
    {
        var inv = CultureInfo.InvariantCulture;
        var options = results.Options;
        var text = new StringBuilder();
        text.AppendLine(inv, $"Measured {results.Measured:yyyy-MM-dd} on {results.Machine}; target built with `gcc {results.GccFlags}`;");
        text.AppendLine(inv, $"per row the median of {options.Rounds * options.Repeats} loops of {options.Iterations:N0} dependent calls: {options.Rounds} rounds, each taking the site through its three states with {options.Repeats} loops of every kind per state, in turn. TSC: {results.TicksPerNanosecond:0.000} ticks/ns.");
        text.AppendLine();
        text.Append(CallsTables.ResultMarkdown(results));
        text.AppendLine();
        foreach (var sentence in Interpretation(results))
            text.AppendLine(sentence);
        text.AppendLine();
        text.AppendLine("Controls: the C loops, which no patch touches, measured in each state of the site (median ns/call); their differences are this machine's noise:");
        text.AppendLine();
        text.Append(CallsTables.ControlMarkdown(results));
        text.AppendLine();
        text.AppendLine("What each loop ran per iteration, disassembled from the process while it was measured (machine code, then GNU syntax):");
        text.AppendLine();
        text.AppendLine("```");
        var first = true;
        foreach (var (name, lines) in results.Listings)
        {
            if (!first)
                text.AppendLine();
            first = false;
            text.AppendLine(inv, $"{Heading(name)}:");
            foreach (var line in lines)
                text.AppendLine(inv, $"  {line}");
        }
        text.AppendLine("```");
        text.AppendLine();
        return text.ToString();
    }

    private static string Heading(string listing) => listing switch
    {
        "retpoline" => "(a) loop_retpoline",
        "retpoline thunk" => "    __x86_indirect_thunk_rax, which (a) calls",
        "indirect" => "(b) loop_indirect",
        "direct" => "(r) loop_direct",
        "inline" => "(n) loop_inline",
        "site Built" => "(c) loop_site, the site as built",
        "site Direct" => "(d) loop_site after ApplyCallSites(CallSiteBackend.Direct)",
        "site Native" => "(e) loop_site after RestoreCallSites() and ApplyCallSites(CallSiteBackend.Default)",
        _ => listing,
    };

    private static IEnumerable<string> Interpretation(CallsResults results)
    {
        var inv = CultureInfo.InvariantCulture;
        // Every comparison goes through (b), paired repeat by repeat: the machine's drift moves both sides alike.
        double Over(string id) => id == "b" ? 0 : results.OverIndirect(id);
        string Cost(double nanoseconds) => $"{CallsTables.Signed(nanoseconds)} ({nanoseconds * results.TicksPerNanosecond:+0.0;−0.0} TSC ticks)";
        string Between(string x, string y) => Cost(Over(x) - Over(y));
        var noise = CallsTables.ControlSpread(results);

        yield return string.Create(inv,
            $"- Retpoline, (a) against (b): {Between("a", "b")} per call, {results.Series("a").Median.Nanoseconds / results.Series("b").Median.Nanoseconds:0.0}× the plain indirect call.");
        yield return string.Create(inv,
            $"- The site as built, (c) against (b): {Between("c", "b")}: the same `call *calls(%rip)`, inside the `LP_CALL1` wrapper.");
        yield return string.Create(inv,
            $"- Direct backend, (d): {Between("d", "b")} against (b), {Between("d", "r")} against the C direct call (r) (the wrapper, and the rewrite effect described above); {Between("a", "d")} against the retpoline call gcc makes of the same C in this build (a).");
        yield return string.Create(inv,
            $"- Native patchlet, (e): {Between("e", "b")} against (b), {Between("e", "n")} above the loop with no call at all (n): that much is the wrapper, which stays around the patched site.");
        yield return string.Create(inv,
            $"- Noise: the cheap C controls moved by up to {CallsTables.Ns(noise)} between the site's states (the retpoline loop by {CallsTables.Ns(CallsTables.ControlSpread(results, "retpoline"))}); differences smaller than that say nothing.");
        foreach (var (phase, choice) in results.Choices)
            yield return string.Create(inv, $"- {phase} phase: `ApplyCallSites` ({choice.Backend}) chose \"{choice.Reason}\"; its stop held the target {choice.MedianPause.TotalMicroseconds:0} µs (median of {choice.Pauses.Count}).");
    }
}
