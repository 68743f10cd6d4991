using System.Text.RegularExpressions;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;
using LivePatch.Payloads;

namespace LivePatch.Tests.Live;

/// <summary>
/// <c>LIVEPATCH_ORIGINAL</c> on running processes (fixtures in tests/fixtures/live/originals/): the new function calls
/// the old code through its trampoline while busy threads call it.
/// </summary>
[Collection(ProcessTests.Name)]
public class OriginalTests
{
    private static string Build(string name) => TestPayloads.Build($"live/originals/{name}.c");

    [Fact]
    public void A_wrapper_fixes_the_argument_calls_the_original_and_logs_while_eight_threads_call_it()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "8");
        worker.AssertValueBecomes("compute", 3);

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(Build("wrap"));

        // 10 * compute(1 + 1): the wrapper's argument fix and factor around the original's helper(2) + 1.
        worker.AssertValueBecomes("compute", 50);
        worker.WaitForLine(l => Regex.IsMatch(l, @"\bcounter=[1-9]"), TimeSpan.FromSeconds(5));
        var counted = worker.NextValue("counter");
        Assert.True(worker.NextValue("counter") > counted, "every call goes through the wrapper");
        var function = Assert.Single(Assert.Single(patcher.List()).Functions);
        Assert.NotEqual(0UL, function.Trampoline);

        patcher.Revert("wrap");
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void The_original_of_a_static_function_runs_its_rip_relative_prologue_relocated()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        worker.AssertValueBecomes("secret", 8);

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        var check = patcher.Check(Payload.Load(Build("secret")));
        Assert.Contains(check, c => c.Name.StartsWith("original of ", StringComparison.Ordinal) && c.Name.EndsWith("!secret", StringComparison.Ordinal));
        patcher.Apply(Build("secret"));

        worker.AssertValueBecomes("secret", 16);
        patcher.Revert("secret");
        worker.AssertValueBecomes("secret", 8);
    }

    [Fact]
    public void A_payload_stacked_on_another_calls_the_one_below_as_its_original()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        patcher.Apply(Build("wrap"));
        patcher.Apply(Build("stacked"));
        worker.AssertValueBecomes("compute", 51);

        patcher.Revert("stacked");
        worker.AssertValueBecomes("compute", 50);
        patcher.Revert("wrap");
        worker.AssertValueBecomes("compute", 3);
    }

    [Fact]
    public void An_original_whose_displaced_instructions_cannot_move_is_refused_naming_the_function()
    {
        var spinner = Gcc.FixturePath("targets/spinner.S");
        using var spinning = RunningTarget.Start("targets/spinning.c", $"-O2 -g -pthread {spinner}");
        var maps = File.ReadAllLines($"/proc/{spinning.Pid}/maps");
        using (var patcher = LivePatcher.Attach(spinning.Pid, Generous.Options))
        {
            var payload = Payload.Load(Build("spin"));
            var checkError = Assert.Throws<PatchRefusedException>(() => patcher.Check(payload));
            var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(payload));

            Assert.Equal(LivePatchRefusal.OriginalUnavailable, error.Refusal);
            Assert.Equal(LivePatchRefusal.OriginalUnavailable, checkError.Refusal);
            Assert.Contains("payload 'spin' calls the original of ", error.Message, StringComparison.Ordinal);
            Assert.Contains("!spin_entry ('original_spin_entry')", error.Message, StringComparison.Ordinal);
            Assert.Contains("cannot be moved to a trampoline", error.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
        }
        Assert.Equal(maps, File.ReadAllLines($"/proc/{spinning.Pid}/maps"));
        var tick = spinning.NextValue("tick");
        Assert.True(spinning.NextValue("tick") > tick, "the target runs on");
    }
}
