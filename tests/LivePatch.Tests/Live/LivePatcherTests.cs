using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Live;

public class LivePatcherTests
{
    internal static string BuildPayload(string source, string flags = "-O2")
    {
        var name = Path.GetFileNameWithoutExtension(source);
        var output = Path.Combine(ExternalTool.ScratchDirectory("payloads"), name + ".o");
        return Gcc.Compile(source, $"-c {flags} -fPIC -ffunction-sections -I {Path.Combine(AppContext.BaseDirectory, "include")}", output);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    public void Output_changes_on_apply_and_comes_back_on_revert(int threads)
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, threads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var fix = BuildPayload("live/apply/fix.c");
        var compute = worker.ReadyAddress("compute");
        Assert.Equal(3, worker.NextValue("compute"));

        using (var patcher = LivePatcher.Attach(worker.Pid))
        {
            var applied = patcher.Apply(fix);

            Assert.Equal("fix", applied.Payload);
            Assert.Equal(threads + 1, applied.ThreadsStopped);
            Assert.Equal(102, worker.NextValue("compute"));
            Assert.True(worker.NextValue("counter") > 0, "the payload writes the target's static counter");
            var listed = Assert.Single(LivePatcher.List(worker.Pid));
            Assert.Equal(PayloadState.Applied, listed.State);
            Assert.Equal(compute, Assert.Single(listed.Functions).OldAddress);

            var reverted = patcher.Revert("fix");

            Assert.Equal("fix", reverted.Payload);
        }
        Assert.Equal(3, worker.NextValue("compute"));
        Assert.Equal(PayloadState.Reverted, Assert.Single(LivePatcher.List(worker.Pid)).State);
    }
}
