using System.Diagnostics;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>What <see cref="PtraceSession.WaitForTaskEvent"/> saw.</summary>
internal enum TaskEventKind
{
    /// <summary>A thread of the process was created; it and its creator are stopped and traced.</summary>
    NewThread,
    /// <summary>A process was forked or vforked; its creator is stopped, the child is stopped and traced until released.</summary>
    NewProcess,
    /// <summary>The process replaced its program (execve); its thread is stopped.</summary>
    Exec,
    /// <summary>Every traced thread exited.</summary>
    Exited,
    /// <summary>The wait was cancelled; threads may be running.</summary>
    Cancelled,
}

/// <summary>A task event: its kind, the thread it happened in and the thread or process it created.</summary>
internal readonly record struct TaskEvent(TaskEventKind Kind, int Tid, int NewId, bool IsVfork);

internal sealed partial class PtraceSession
{
    /// <summary>Options that report every new thread or process and every execve before they run.</summary>
    public const int WatchTaskOptions = Libc.PtraceOptionTraceClone | Libc.PtraceOptionTraceFork | Libc.PtraceOptionTraceVfork | Libc.PtraceOptionTraceExec;

    /// <summary>
    /// Sets ptrace options on every traced thread (all must be stopped) and on threads seized later. Must run on the
    /// tracer thread.
    /// </summary>
    public void SetOptions(int options)
    {
        RequireTracer();
        foreach (var thread in _threads.Values)
        {
            if (!thread.Stopped)
                throw new InvalidOperationException($"thread {thread.Tid} must be stopped to set ptrace options");
            if (Libc.Ptrace(Libc.PtraceSetOptions, thread.Tid, 0, options) < 0)
                throw Failure("PTRACE_SETOPTIONS", thread.Tid);
        }
        _options = options;
    }

    /// <summary>True while <see cref="ResumeAll"/> leaves every thread stopped.</summary>
    public bool IsHeld => _held;

    /// <summary>Ends a hold and resumes every thread. Must run on the tracer thread.</summary>
    public void Release()
    {
        RequireTracer();
        _held = false;
        ResumeAll();
    }

    /// <summary>
    /// Lets every thread run, passing the program's signals on and leaving its job-control stops alone, until it
    /// creates a thread or process, runs execve, exits or <paramref name="cancellation"/> is signalled. Needs
    /// <see cref="WatchTaskOptions"/> (see <see cref="SetOptions"/>). Must run on the tracer thread.
    /// </summary>
    public TaskEvent WaitForTaskEvent(CancellationToken cancellation)
    {
        RequireTracer();
        if ((_options & WatchTaskOptions) != WatchTaskOptions)
            throw new InvalidOperationException("watching for new tasks needs PTRACE_O_TRACECLONE, TRACEFORK, TRACEVFORK and TRACEEXEC");
        _held = false;
        ResumeAll();
        while (true)
        {
            foreach (var thread in _threads.Values.ToList())
                if (PollWatched(thread) is { } seen)
                    return seen;
            if (_threads.Count == 0)
                return new TaskEvent(TaskEventKind.Exited, Pid, 0, false);
            if (cancellation.IsCancellationRequested)
                return new TaskEvent(TaskEventKind.Cancelled, Pid, 0, false);
            Libc.MicroSleep(1000);
        }
    }

    /// <summary>True when process <paramref name="child"/> shares its address space with the traced process.</summary>
    public bool SharesMemoryWith(int child)
    {
        var result = Libc.Syscall3(SystemCall.Kcmp, Pid, child, Libc.KcmpVm);
        // Without kcmp (or permission) assume it does: the caller then takes the careful path.
        return result != 1 && result != 2;
    }

    /// <summary>
    /// Detaches a process forked while fork events were traced, once it has reached its first stop; runs
    /// <paramref name="whileStopped"/> (with its pid) before it may run. Must run on the tracer thread.
    /// </summary>
    public void ReleaseForkedChild(int child, Action<int>? whileStopped = null)
    {
        RequireTracer();
        _forkedChildren.Remove(child);
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 2;
        while (true)
        {
            var result = Libc.WaitPid(child, out var status, Libc.WNoHang | Libc.WAll);
            if (result < 0 && Marshal.GetLastPInvokeError() != Libc.Eintr)
                return; // gone already
            if (result > 0 && (status & 0xff) != 0x7f)
                return; // it exited
            if (result > 0)
                break;
            if (Stopwatch.GetTimestamp() > deadline)
            {
                // It never stopped: detaching needs a stop, so leave it to the kernel (it detaches when we exit).
                return;
            }
            Libc.MicroSleep(50);
        }
        try
        {
            whileStopped?.Invoke(child);
        }
        finally
        {
            Libc.Ptrace(Libc.PtraceDetach, child, 0, 0);
        }
    }

    /// <summary>The processes forked while fork events were traced and not released yet.</summary>
    public IReadOnlyList<int> ForkedChildren => [.. _forkedChildren];

    // After a clone, fork or vfork event: a new thread joins the session; a new process waits to be released.
    private int TrackNewTask(int tid, int ptraceEvent)
    {
        nint message = 0;
        unsafe
        {
            if (Libc.Ptrace(Libc.PtraceGetEventMsg, tid, 0, (nint)(&message)) < 0)
                return 0;
        }
        var id = (int)message;
        if (ptraceEvent == Libc.PtraceEventClone && Directory.Exists($"/proc/{Pid}/task/{id}"))
        {
            // It starts in a stop of its own, which counts as the stop an interrupt would cause.
            _threads.TryAdd(id, new TracedThread(id) { InterruptInFlight = true });
        }
        else if (!_forkedChildren.Contains(id))
        {
            _forkedChildren.Add(id);
        }
        return id;
    }

    private TaskEvent? PollWatched(TracedThread thread)
    {
        if (thread.Stopped)
            return null;
        var result = Libc.WaitPid(thread.Tid, out var status, Libc.WNoHang | Libc.WAll);
        if (result == 0 || (result < 0 && Marshal.GetLastPInvokeError() == Libc.Eintr))
            return null;
        if (result < 0 || (status & 0xff) != 0x7f)
        {
            _threads.Remove(thread.Tid); // exited, killed, or gone
            return null;
        }
        var signal = (status >> 8) & 0xff;
        var ptraceEvent = status >> 16;
        switch (ptraceEvent)
        {
            case Libc.PtraceEventClone or Libc.PtraceEventFork or Libc.PtraceEventVfork:
                thread.Stopped = true;
                var id = TrackNewTask(thread.Tid, ptraceEvent);
                return new TaskEvent(_threads.ContainsKey(id) ? TaskEventKind.NewThread : TaskEventKind.NewProcess, thread.Tid, id, ptraceEvent == Libc.PtraceEventVfork);
            case Libc.PtraceEventExec:
                thread.Stopped = true;
                return new TaskEvent(TaskEventKind.Exec, thread.Tid, 0, false);
            case Libc.PtraceEventStop:
                thread.InterruptInFlight = false;
                // A job-control stop (Ctrl-Z, SIGSTOP) stays a stop until SIGCONT; anything else was our trap.
                var request = signal is Libc.Sigstop or Libc.Sigtstp or Libc.Sigttin or Libc.Sigttou ? Libc.PtraceListen : Libc.PtraceCont;
                Libc.Ptrace(request, thread.Tid, 0, 0);
                return null;
            default:
                // The program's own signal: deliver it.
                Libc.Ptrace(Libc.PtraceCont, thread.Tid, 0, signal);
                return null;
        }
    }
}
