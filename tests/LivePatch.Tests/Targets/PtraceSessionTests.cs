using System.Diagnostics;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

[Collection(ProcessTests.Name)]
public class PtraceSessionTests
{
    private static long Deadline(int milliseconds = 2000) => Stopwatch.GetTimestamp() + Stopwatch.Frequency * milliseconds / 1000;

    [Fact]
    public void Every_thread_stops_and_runs_again_after_resume_and_detach()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "16");
        using (var session = PtraceSession.Attach(worker.Pid))
        {
            var stopped = session.OnTracer(() => session.StopAll(Deadline()));

            Assert.Equal(17, stopped.Count);
            Assert.All(worker.ThreadStates().Values, state => Assert.Equal("t", state));
            session.OnTracer(() =>
            {
                session.ResumeAll();
                return 0;
            });
        }

        var calls = worker.NextValue("calls");
        Assert.True(worker.NextValue("calls") > calls,
            $"the threads call compute again after detach; states: {string.Join(" ", worker.ThreadStates().Values)}");
        Assert.Equal(0, RunningTarget.TracerProcess(worker.Pid));
    }

    [Fact]
    public void A_second_tracer_finds_the_process_busy_and_named()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var first = PtraceSession.Attach(worker.Pid);

        var error = Assert.Throws<TargetException>(() => PtraceSession.Attach(worker.Pid));

        Assert.Equal(TargetError.Busy, error.Error);
        Assert.Contains($"already traced by process {Environment.ProcessId}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_remote_system_call_runs_in_the_target_and_leaves_its_registers_as_they_were()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var session = PtraceSession.Attach(worker.Pid);

        var (pid, before, after) = session.OnTracer(() =>
        {
            var tid = session.StopOne(Deadline());
            var registersBefore = session.GetRegisters(tid);
            var result = session.Syscall(tid, 39); // getpid
            var registersAfter = session.GetRegisters(tid);
            session.ResumeAll();
            return (result, registersBefore, registersAfter);
        });

        Assert.Equal(worker.Pid, pid);
        Assert.Equal(before, after);
        Assert.True(worker.NextValue("calls") >= 0);
    }

    [Fact]
    public void Memory_is_mapped_within_reach_of_a_module_and_never_over_an_existing_mapping()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var target = TargetProcess.Open(worker.Pid);
        var module = target.MainModule;
        using var session = PtraceSession.Attach(worker.Pid);

        var addresses = session.OnTracer(() =>
        {
            var tid = session.StopOne(Deadline());
            try
            {
                return Enumerable.Range(0, 3).Select(_ =>
                    RemoteMemory.MapNear(session, tid, module.Start, module.End, 0x3000, MemoryProtection.Read | MemoryProtection.Execute)).ToList();
            }
            finally
            {
                session.ResumeAll();
            }
        });

        var map = target.ReadMemoryMap();
        foreach (var address in addresses)
        {
            var distance = address < module.Start ? module.End - address : address + 0x3000 - module.Start;
            Assert.True(distance < 2UL << 30, $"0x{address:x} is {distance:x} bytes from {module}");
            var region = map.Find(address);
            Assert.NotNull(region);
            Assert.Equal(MemoryProtection.Read | MemoryProtection.Execute, region.Value.Protection);
        }
        Assert.Equal(3, addresses.Distinct().Count());
        Assert.True(worker.NextValue("calls") >= 0);
    }

    [Fact]
    public void Threads_created_while_the_others_stop_are_stopped_too()
    {
        using var spawner = RunningTarget.Start("targets/spawner.c", "-O2 -pthread");
        using var session = PtraceSession.Attach(spawner.Pid);

        for (var round = 0; round < 20; round++)
        {
            var stopped = session.OnTracer(() => session.StopAll(Deadline()));
            // A thread already exiting (zombie or dead) cannot be stopped, and needs not be: it runs no more code.
            var states = spawner.ThreadStates().Where(s => s.Value is not ("Z" or "X")).ToList();
            Assert.All(states, s => Assert.Equal("t", s.Value));
            Assert.All(states, s => Assert.Contains(s.Key, stopped));
            session.OnTracer(() =>
            {
                session.ResumeAll();
                return 0;
            });
            Thread.Sleep(2);
        }
    }

    // The runtime waits for the children it starts and would swallow their ptrace stops: refuse, untouched.
    [Fact]
    public void A_target_that_is_our_own_child_is_refused_with_the_reason()
    {
        var executable = RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags);
        using var worker = RunningTarget.StartExecutable(executable, asChild: true, "2");

        var error = Assert.Throws<TargetException>(() => PtraceSession.Attach(worker.Pid));

        Assert.Equal(TargetError.PermissionDenied, error.Error);
        Assert.Contains("is a child of this process", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, RunningTarget.TracerProcess(worker.Pid));
    }

    [Fact]
    public void A_process_cannot_trace_itself() =>
        Assert.Equal(TargetError.PermissionDenied, Assert.Throws<TargetException>(() => PtraceSession.Attach(Environment.ProcessId)).Error);
}
