using System.Text.Json;
using LivePatch.Tests.Fixtures;
using LivePatch.X86;

namespace LivePatch.Tests.Cli;

/// <summary>examples/sites/example.c, built and run with livepatch as docs/sites.md shows.</summary>
[Collection(ProcessTests.Name)]
public class SitesExampleTests
{
    private static readonly Lazy<string> Example = new(() => Gcc.Compile(
        Path.Combine(AppContext.BaseDirectory, "examples", "sites", "example.c"),
        $"-O2 -pthread -std=c11 -Wall -Wextra -Werror -I {Path.Combine(AppContext.BaseDirectory, "include")}",
        Path.Combine(ExternalTool.ScratchDirectory("examples"), "example")));

    // What LP_ALTERNATIVE_2 in path() picks on this CPU.
    private static string ExpectedPath()
    {
        var cpu = CpuFeatures.Detect();
        return cpu.Has(CpuFeature.Avx2) ? "avx2" : cpu.Has(CpuFeature.Sse42) ? "sse4.2" : "generic";
    }

    [Fact]
    public void Sites_lists_every_kind_of_site_the_example_uses()
    {
        var result = LivepatchCli.Run("sites", Example.Value, "--json");

        Assert.Equal(0, result.ExitCode);
        using var json = JsonDocument.Parse(result.Output);
        var kinds = json.RootElement.EnumerateArray().Select(r => r.GetProperty("kind").GetString()).ToList();
        Assert.Equal(2, kinds.Count(k => k == "alternative"));
        Assert.Equal(3, kinds.Count(k => k == "callsite"));
        Assert.Equal(2, kinds.Count(k => k == "lock prefix"));
        Assert.Equal(1, kinds.Count(k => k == "static key"));
    }

    [Fact]
    public void Run_with_alternatives_gives_the_cpus_path_and_keeps_the_results_right()
    {
        var plain = LivepatchCli.Run("run", "--quiet", "--", Example.Value, "2");
        var patched = LivepatchCli.Run("run", "--alternatives", "--", Example.Value, "2");

        Assert.Equal((0, 0), (plain.ExitCode, patched.ExitCode));
        Assert.Matches(@"^round 1: clz\(1000\)=22 path=generic counted=10 ticks=\+\d+ traced=0$", plain.Output.Split('\n')[1]);
        Assert.Matches($@"^round 2: clz\(1000\)=22 path={Regex(ExpectedPath())} counted=20 ticks=\+\d+ traced=0$", patched.Output.Split('\n')[2]);
        Assert.Contains("example: 3 of 3 call sites rewritten", patched.Error, StringComparison.Ordinal);
        Assert.Contains("2 lock prefixes dropped: one thread", patched.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_thread_started_by_the_example_gets_the_lock_prefixes_back_first()
    {
        var result = LivepatchCli.Run("run", "--alternatives", "--", Example.Value, "2", "1");

        Assert.Equal(0, result.ExitCode);
        Assert.Matches(@"livepatch: thread \d+ was created: lock prefixes restored before it ran", result.Error);
    }

    private static string Regex(string text) => System.Text.RegularExpressions.Regex.Escape(text);
}
