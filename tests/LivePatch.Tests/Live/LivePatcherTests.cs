using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;
using LivePatch.Payloads;

namespace LivePatch.Tests.Live;

[Collection(ProcessTests.Name)]
public class LivePatcherTests
{

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    public void Output_changes_on_apply_and_comes_back_on_revert(int threads)
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, threads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var fix = TestPayloads.Build("live/apply/fix.c");
        var compute = worker.ReadyAddress("compute");
        worker.AssertValueBecomes("compute", 3);

        using (var patcher = LivePatcher.Attach(worker.Pid, Generous.Options))
        {
            var applied = patcher.Apply(fix);

            Assert.Equal("fix", applied.Payload);
            Assert.Equal(threads + 1, applied.ThreadsStopped);
            worker.AssertValueBecomes("compute", 102);
            // The payload writes the target's static counter.
            worker.WaitForLine(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"\bcounter=[1-9]"), TimeSpan.FromSeconds(5));
            var listed = Assert.Single(LivePatcher.List(worker.Pid));
            Assert.Equal(PayloadState.Applied, listed.State);
            Assert.Equal(compute, Assert.Single(listed.Functions).OldAddress);

            var reverted = patcher.Revert("fix");

            Assert.Equal("fix", reverted.Payload);
        }
        worker.AssertValueBecomes("compute", 3);
        Assert.Equal(PayloadState.Reverted, Assert.Single(LivePatcher.List(worker.Pid)).State);
    }
}

[Collection(ProcessTests.Name)]
public class LivePatcherPlacesTests
{
    [Fact]
    public void A_static_function_of_the_executable_is_patched_and_restored()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        worker.AssertValueBecomes("secret", 8);

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(TestPayloads.Build("live/apply/secret.c"));
        worker.AssertValueBecomes("secret", 71);

        patcher.Revert("secret");
        worker.AssertValueBecomes("secret", 8);
    }

    [Fact]
    public void A_function_of_a_shared_library_is_patched_and_calls_the_library_static_function()
    {
        using var target = TestTargets.StartWithLib();
        target.AssertValueBecomes("scale", 1006);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var applied = patcher.Apply(TestPayloads.Build("live/apply/scale.c"));

        Assert.Equal("libscale.so!scale", Assert.Single(applied.Functions).Name);
        target.AssertValueBecomes("scale", 2006);
        target.AssertValueBecomes("compute", 3);
        patcher.Revert("scale");
        target.AssertValueBecomes("scale", 1006);
    }

    // The thread's RIP is at +2 of the site, forever: it is moved into a relocated copy of the displaced instructions.
    [Fact]
    public void A_thread_parked_inside_the_first_bytes_is_moved_to_a_trampoline_instead_of_blocking_apply()
    {
        var parked = Gcc.FixturePath("targets/parked.S");
        using var parking = RunningTarget.Start("targets/parking.c", $"-O2 -g -pthread {parked}");
        var entry = parking.ReadyAddress("park_entry");
        var parker = Assert.Single(parking.OtherThreads());
        Assert.Equal(entry + 2, ParkedAt(parking.Pid, parker));

        using var patcher = LivePatcher.Attach(parking.Pid, Generous.Options);
        var applied = patcher.Apply(TestPayloads.Build("live/apply/park.c"));

        var trampolines = Assert.Single(Assert.Single(patcher.List()).Memory, m => m.Use == "trampolines");
        var now = ParkedAt(parking.Pid, parker);
        Assert.True(now == trampolines.Address + 2, $"the parked thread resumes its system call in the trampoline: pc 0x{now:x}, trampolines at 0x{trampolines.Address:x}");
        Assert.Equal("park_entry_fixed", Assert.Single(applied.Functions).NewSymbol);
        var tick = parking.NextValue("tick");
        Assert.True(parking.NextValue("tick") > tick, "the target still runs");
        patcher.Revert("park");
    }

    // /proc/PID/task/TID/syscall: "nr args... sp pc" while the thread is in a system call.
    private static ulong ParkedAt(int pid, int tid)
    {
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var fields = File.ReadAllText($"/proc/{pid}/task/{tid}/syscall").Trim().Split(' ');
            if (fields.Length == 9 && fields[0] == "34")
                return Convert.ToUInt64(fields[8], 16);
            Thread.Sleep(10);
        }
        throw new Xunit.Sdk.XunitException($"thread {tid} is not parked in pause()");
    }

    [Fact]
    public void A_module_qualified_name_picks_one_of_two_functions_of_the_same_name()
    {
        using var target = TestTargets.StartWithLib();
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);

        patcher.Apply(TestPayloads.Build("live/apply/qualified.c"));

        target.AssertValueBecomes("compute", 52);
        target.AssertValueBecomes("scale", 1006);
    }
}
