using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.X86;

namespace LivePatch.Tests.Live;

/// <summary>A stripped program, as distributions ship them: a function without a name is patched by <c>module+0xOFFSET</c>.</summary>
[Collection(ProcessTests.Name)]
public class StrippedTests
{
    [Fact]
    public void A_function_of_a_stripped_program_is_patched_by_its_offset_and_reverted()
    {
        var directory = ExternalTool.ScratchDirectory("stripped");
        var built = RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags);
        var offset = ElfFile.Load(built).FindSymbols("compute")[0].Value;
        var stripped = Path.Combine(directory, "worker-stripped");
        ExternalTool.Run("strip", "-o", stripped, built);
        using var worker = RunningTarget.StartExecutable(stripped, "2");
        var spec = $"worker-stripped+0x{offset:x}";
        worker.AssertValueBecomes("compute", 3);
        using (var target = TargetProcess.Open(worker.Pid))
        {
            Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("compute"));
            var unnamed = target.ResolveSymbol(spec);
            Assert.Equal((worker.ReadyAddress("compute"), $"+0x{offset:x}", spec), (unnamed.Address, unnamed.Name, unnamed.QualifiedName));
            var outside = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("worker-stripped+0x7fffffff"));
            Assert.Contains("not in the code of worker-stripped", outside.Message, StringComparison.Ordinal);
        }
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var payload = TestPayloads.Build("live/apply/unnamed.c", $"-O2 -DOLD=\"{spec}\"");
        var registers = Assert.Single(patcher.Check(Payload.Load(payload)), r => r.Name.EndsWith(" registers", StringComparison.Ordinal));
        var applied = Assert.Single(patcher.Apply(payload).Functions);

        // No thunk, and not because the unnamed old function counts as writing everything (that would leave its
        // callers' registers unguarded): its FDE sizes it, it writes eax, and the new one writes nothing more.
        Assert.Contains("the new code writes no call-clobbered register the old one left alone", registers.Detail, StringComparison.Ordinal);
        Assert.Equal((0UL, applied.NewAddress), (applied.Thunk, Decoded.All(applied.PatchBytes, applied.PatchAddress).Single().NearBranchTarget));
        Assert.Equal(spec, applied.Name);
        Assert.Equal(worker.ReadyAddress("compute"), applied.OldAddress);
        worker.AssertValueBecomes("compute", 102);
        patcher.Revert("unnamed");
        worker.AssertValueBecomes("compute", 3);
    }
}
