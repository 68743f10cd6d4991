using System.Diagnostics;
using System.Globalization;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using Xunit.Abstractions;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Issue 12, part 2, the property: at least 10,000 corrupted payloads go through load, check and apply (then revert
/// and unload; load into the target and unload for those with a hook) against one live target, started and attached once. Only the library's own exceptions come out, each
/// one line; the target never dies and, at the end, holds the code, mappings and record it had at the start.
/// </summary>
[Collection(ProcessTests.Name)]
public class PayloadMutationPropertyTests(ITestOutputHelper output)
{
    private const int Mutants = 10_000;

    /// <summary>The seed of the run; <c>LIVEPATCH_MUTANT_SEED</c> replays another (a failure names its seed).</summary>
    private static int Seed => int.TryParse(Environment.GetEnvironmentVariable("LIVEPATCH_MUTANT_SEED"), CultureInfo.InvariantCulture, out var seed) ? seed : 12;

    [Fact]
    public void Mutated_payloads_never_escape_as_internal_errors_nor_change_the_target()
    {
        var unmutated = File.ReadAllBytes(LivePayloads.Build("mutants/base.c", "-O2 -fPIC"));
        PayloadMutants[] bases =
        [
            new(unmutated),
            new(File.ReadAllBytes(LivePayloads.Build("mutants/base.c", "-O0 -fPIC"))),
            new(File.ReadAllBytes(LivePayloads.Build("mutants/hooked.c", "-O2 -fPIC"))),
        ];
        using var idle = RunningTarget.Start("targets/idle.c", "-O2 -g");
        using var patcher = LivePatcher.Attach(idle.Pid, Generous.Options);
        // Once unmutated, so that the record's mapping exists before the snapshot.
        var warmUp = new MutantCampaign(patcher, "mutant.o");
        warmUp.Run(new PayloadMutant(unmutated, "unmutated"));
        Assert.Equal(1, warmUp.Counts.Applied);
        var before = TargetSnapshot.Take(idle.Pid, idle.ReadyAddress("idle_first"), idle.ReadyAddress("idle_second"), idle.ReadyAddress("idle_helper"));

        var campaign = new MutantCampaign(patcher, "mutant.o");
        var random = new Random(Seed);
        var clock = Stopwatch.StartNew();
        for (var round = 0; round < Mutants; round++)
        {
            var mutant = bases[round % bases.Length].Next(random);
            try
            {
                campaign.Run(mutant);
            }
            catch (Exception error)
            {
                throw new Xunit.Sdk.XunitException($"seed {Seed}, mutant {round} ({mutant.Description}): {error.GetType().Name}: {error.Message} after {campaign.Counts}\n{error.StackTrace}");
            }

            Assert.False(idle.HasExited, $"seed {Seed}, mutant {round} ({mutant.Description}): the target died");
        }

        output.WriteLine($"seed {Seed}: {campaign.Counts} in {clock.Elapsed.TotalSeconds:0.0} s");
        foreach (var (type, (count, example)) in campaign.Counts.Exceptions)
            output.WriteLine($"{type} x{count}, e.g. {example}");
        Assert.Equal(Mutants, campaign.Counts.Total);
        // Every stage was reached: the mix is not all refused at load.
        Assert.True(campaign.Counts.RefusedAtCheck > 0 && campaign.Counts.Applied > 0 && campaign.Counts.LoadedWithHooks > 0, campaign.Counts.ToString());
        Assert.Empty(patcher.List());
        before.AssertUnchanged();
        Assert.True(Directory.Exists($"/proc/{idle.Pid}"));
    }
}
