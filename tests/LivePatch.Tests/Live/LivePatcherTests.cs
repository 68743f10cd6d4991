using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Live;

[Collection(ProcessTests.Name)]
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

        using (var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous))
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

[Collection(ProcessTests.Name)]
public class LivePatcherPlacesTests
{
    [Fact]
    public void A_static_function_of_the_executable_is_patched_and_restored()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TargetProcessTests.WorkerFlags, "2");
        Assert.Equal(8, worker.NextValue("secret"));

        using var patcher = LivePatcher.Attach(worker.Pid, ProcessTests.Generous);
        patcher.Apply(LivePatcherTests.BuildPayload("live/apply/secret.c"));
        Assert.Equal(71, worker.NextValue("secret"));

        patcher.Revert("secret");
        Assert.Equal(8, worker.NextValue("secret"));
    }

    [Fact]
    public void A_function_of_a_shared_library_is_patched_and_calls_the_library_static_function()
    {
        using var target = LivePatchRefusalTests.StartWithLib();
        Assert.Equal(1006, target.NextValue("scale"));

        using var patcher = LivePatcher.Attach(target.Pid, ProcessTests.Generous);
        var applied = patcher.Apply(LivePatcherTests.BuildPayload("live/apply/scale.c"));

        Assert.Equal("libscale.so!scale", Assert.Single(applied.Functions).Name);
        Assert.Equal(2006, target.NextValue("scale"));
        Assert.Equal(3, target.NextValue("compute"));
        patcher.Revert("scale");
        Assert.Equal(1006, target.NextValue("scale"));
    }

    [Fact]
    public void A_module_qualified_name_picks_one_of_two_functions_of_the_same_name()
    {
        using var target = LivePatchRefusalTests.StartWithLib();
        using var patcher = LivePatcher.Attach(target.Pid, ProcessTests.Generous);

        patcher.Apply(LivePatcherTests.BuildPayload("live/apply/qualified.c"));

        Assert.Equal(52, target.NextValue("compute"));
        Assert.Equal(1006, target.NextValue("scale"));
    }
}
