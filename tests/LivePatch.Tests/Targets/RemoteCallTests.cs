using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

/// <summary>
/// <see cref="PtraceSession.CallFunction"/> on real processes (tests/fixtures/targets/calls.c): the thread's registers,
/// vector state and red zone come back unchanged, a system call it was parked in restarts as if nothing happened,
/// signals sent meanwhile arrive after, and a call that hangs or crashes is abandoned with the program alive. (The
/// thread putting itself back when livepatch dies during a call is tested with hooks, in HookTests.)
/// </summary>
[Collection(ProcessTests.Name)]
public partial class RemoteCallTests
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(2);


    private static long Deadline() => Stopwatch.GetTimestamp() + Stopwatch.Frequency * 2;

    // Stops the main thread (as hooks use), makes the call, puts everything back and lets the thread go.
    private static RemoteCallResult CallOnMainThread(PtraceSession session, ulong function, TimeSpan timeout, params ulong[] arguments) =>
        session.OnTracer(() =>
        {
            var tid = session.StopOne(Deadline());
            try
            {
                return session.CallFunction(tid, function, timeout, arguments);
            }
            finally
            {
                session.ResumeAll();
            }
        });

    [Fact]
    public void A_call_gets_six_arguments_an_aligned_frame_and_leaves_registers_vectors_and_red_zone_as_they_were()
    {
        using var target = TestTargets.StartCalls("sleep");
        var tid = int.Parse(RedzoneTid().Match(target.Ready).Groups[1].Value, CultureInfo.InvariantCulture);
        target.WaitForLine(l => Regex.IsMatch(l, @"redzone_rounds=[1-9]"), TimeSpan.FromSeconds(10));
        using var session = PtraceSession.Attach(target.Pid);

        var (sum, alignment, clobbered, before, after) = session.OnTracer(() =>
        {
            session.StopAll(Deadline());
            try
            {
                var registersBefore = session.GetRegisters(tid);
                var added = session.CallFunction(tid, target.ReadyAddress("add"), CallTimeout, 1, 2, 3, 4, 5, 6);
                var aligned = session.CallFunction(tid, target.ReadyAddress("frame_alignment"), CallTimeout);
                var vectors = session.CallFunction(tid, target.ReadyAddress("clobber_vectors"), CallTimeout);
                return (added, aligned, vectors, registersBefore, session.GetRegisters(tid));
            }
            finally
            {
                session.ResumeAll();
            }
        });

        Assert.Equal(RemoteCallEnd.Returned, sum.End);
        Assert.Equal(91UL, sum.ReturnValue); // 1 + 2*2 + 3*3 + 4*4 + 5*5 + 6*6
        Assert.Equal(tid, sum.Tid);
        Assert.Equal(0UL, alignment.ReturnValue);
        Assert.Equal(1UL, clobbered.ReturnValue);
        Assert.Equal(before, after);
        // The spinner checked its red zone and %xmm8 all along (the call clobbered %xmm8): never a difference.
        var rounds = target.NextValue("redzone_rounds");
        Assert.True(target.NextValue("redzone_rounds") > rounds, "the spinning thread runs on");
        target.AssertValueBecomes("redzone_errors", 0);
    }

    [Theory]
    [InlineData("read")]
    [InlineData("sleep")]
    public void A_thread_parked_in_a_system_call_makes_calls_and_its_system_call_goes_on_as_before(string mode)
    {
        using var target = TestTargets.StartCalls(mode);
        var maps = File.ReadAllLines($"/proc/{target.Pid}/maps");
        using var session = PtraceSession.Attach(target.Pid);
        var setHooked = target.ReadyAddress("set_hooked");

        for (var i = 1; i <= 20; i++)
        {
            var result = CallOnMainThread(session, setHooked, CallTimeout, (ulong)i);
            Assert.Equal(RemoteCallEnd.Returned, result.End);
            Assert.Equal((ulong)(2 * i), result.ReturnValue);
            Assert.Equal(target.Pid, result.Tid);
            Thread.Sleep(7); // land in different places of the loop
        }

        target.AssertValueBecomes("hooked", 20);
        Assert.Equal(maps, File.ReadAllLines($"/proc/{target.Pid}/maps")); // each call's return stub was unmapped
        // read() kept every byte in sequence and nanosleep() returned 0 after its full 20 ms each time.
        target.AssertValueBecomes("errors", 0);
        var n = target.NextValue("n");
        Assert.True(target.NextValue("n") > n, "the main thread goes on with its loop");
    }

    [Fact]
    public void Signals_sent_to_the_thread_during_the_call_are_delivered_after_it_once_each()
    {
        using var target = TestTargets.StartCalls("read");
        using var session = PtraceSession.Attach(target.Pid);

        var result = CallOnMainThread(session, target.ReadyAddress("signal_self"), CallTimeout);

        Assert.Equal(RemoteCallEnd.Returned, result.End);
        Assert.Equal(7UL, result.ReturnValue);
        target.AssertValueBecomes("usr1", 1);
        target.AssertValueBecomes("usr2", 1);
        target.AssertValueBecomes("errors", 0);
    }

    [Theory]
    [InlineData("read")]
    [InlineData("sleep")]
    public void A_call_that_never_returns_is_abandoned_at_the_timeout_and_the_thread_goes_on(string mode)
    {
        using var target = TestTargets.StartCalls(mode);
        using var session = PtraceSession.Attach(target.Pid);

        var result = CallOnMainThread(session, target.ReadyAddress("spin_forever"), TimeSpan.FromMilliseconds(200));

        Assert.Equal(RemoteCallEnd.TimedOut, result.End);
        Assert.True(result.Elapsed >= TimeSpan.FromMilliseconds(200), $"abandoned after {result.Elapsed}");
        target.AssertValueBecomes("errors", 0);
        var n = target.NextValue("n");
        Assert.True(target.NextValue("n") > n, "the main thread goes on with its loop");
    }

    [Fact]
    public void A_call_that_faults_is_abandoned_without_delivering_the_fault_and_the_program_lives()
    {
        using var target = TestTargets.StartCalls("read");
        using var session = PtraceSession.Attach(target.Pid);

        var result = CallOnMainThread(session, target.ReadyAddress("crash"), CallTimeout);

        Assert.Equal(RemoteCallEnd.Faulted, result.End);
        Assert.Equal("SIGSEGV", result.SignalName);
        Assert.Equal(16UL, result.FaultAddress);
        Assert.False(target.HasExited);
        target.AssertValueBecomes("errors", 0);
        var n = target.NextValue("n");
        Assert.True(target.NextValue("n") > n, "the main thread goes on with its loop");
    }

    [GeneratedRegex(@"\bredzone_tid=(\d+)")]
    private static partial Regex RedzoneTid();
}
