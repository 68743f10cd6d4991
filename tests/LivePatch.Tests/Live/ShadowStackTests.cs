using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// A process that asked the kernel for a CET shadow stack (tests/fixtures/targets/shadowstack.c). Where the CPU and
/// kernel grant it, hooks (calls made with ptrace, whose return address the shadow stack lacks) are refused before
/// anything changes, while a payload's jump and its calls keep the shadow stack and apply. Where they refuse it (this
/// CPU has no user shadow stacks), what livepatch reads from /proc must agree, and hooks run.
/// </summary>
[Collection(ProcessTests.Name)]
public class ShadowStackTests
{
    [Fact]
    public void Hooks_are_refused_exactly_where_the_kernel_granted_a_shadow_stack_and_jumps_apply_there()
    {
        using var target = RunningTarget.Start("targets/shadowstack.c", "-O2 -g -fcf-protection=full");
        var granted = target.Ready.Contains("shstk=1", StringComparison.Ordinal);
        var compute = target.ReadyAddress("compute");
        var code = TargetSnapshot.Take(target.Pid, compute);
        target.AssertValueBecomes("compute", 3);

        var detected = ControlFlowEnforcement.FirstThreadWith(target.Pid, CetFeatures.ShadowStack);
        Assert.Equal(granted, detected is not null);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var hooked = Record.Exception(() => patcher.Apply(Payload.Load(TestPayloads.Build("live/hooks/veto.c"))));
        var refused = Assert.IsType<PatchRefusedException>(hooked);
        if (granted)
        {
            Assert.Equal(LivePatchRefusal.ControlFlowEnforcement, refused.Refusal);
            Assert.Contains($"process {target.Pid} enforces CET on thread {target.Pid} (x86_Thread_features: shstk", refused.Message, StringComparison.Ordinal);
            Assert.Contains("pre-apply hook", refused.Message, StringComparison.Ordinal);
        }
        else
        {
            // The hook was called and returned its veto: nothing stood in its way.
            Assert.Equal(LivePatchRefusal.VetoedByHook, refused.Refusal);
        }
        code.AssertUnchanged();
        Assert.Empty(patcher.List());
        Assert.Contains(patcher.Check(Payload.Load(TestPayloads.Build("live/apply/fix.c"))),
            r => r.Name == "control-flow enforcement" && r.Detail.Contains(granted ? "enforces shstk" : "no thread enforces CET", StringComparison.Ordinal));

        patcher.Apply(Payload.Load(TestPayloads.Build("live/apply/fix.c")));
        target.AssertValueBecomes("compute", 102);
        patcher.Revert("fix");
        target.AssertValueBecomes("compute", 3);
        Assert.False(target.HasExited);
    }
}
