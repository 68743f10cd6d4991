using System.Diagnostics;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>
/// A ptrace session on every thread of one process. All requests run on one <see cref="TracerThread"/>.
/// Threads are seized without stopping them; <see cref="StopAll"/> interrupts them, <see cref="ResumeAll"/>
/// lets them go with any signal we intercepted delivered again, and <see cref="Dispose"/> detaches every thread
/// on every path. The main thread is seized first: the kernel allows one tracer, so a second livepatch (or
/// a debugger) finds the process busy for the whole session.
/// </summary>
internal sealed partial class PtraceSession : IDisposable
{
    private sealed class TracedThread(int tid)
    {
        public int Tid { get; } = tid;
        public bool Stopped { get; set; }
        public int PendingSignal { get; set; }

        // PTRACE_INTERRUPT sent and its stop not collected yet: another interrupt would arm a second trap
        // that fires after the next resume, and a stop nobody collects would hold the thread forever.
        public bool InterruptInFlight { get; set; }
    }

    private readonly Dictionary<int, TracedThread> _threads = [];
    private readonly TracerThread _tracer;

    // Processes forked while we traced fork events: auto-attached to us, to be detached (see ReleaseForkedChild).
    private readonly List<int> _forkedChildren = [];

    // PTRACE_O_* options every thread has, new ones included (0 unless watching for new tasks or launching).
    private int _options;

    // While held, ResumeAll leaves every thread stopped: a launched program waits at its entry point.
    private bool _held;
    private ulong? _syscallInstruction;
    private bool _disposed;

    // When a wait last asked /proc whether the whole process ended (see ThrowIfEnded).
    private long _endCheckedAt;

    private PtraceSession(int pid)
    {
        Pid = pid;
        _tracer = new TracerThread($"livepatch tracer {pid}");
    }

    public int Pid { get; }

    /// <summary>Seizes every thread of <paramref name="pid"/> (without stopping them).</summary>
    /// <exception cref="TargetException">No such process, no permission, or another tracer holds it.</exception>
    public static PtraceSession Attach(int pid)
    {
        if (pid == Environment.ProcessId)
            throw new TargetException(TargetError.PermissionDenied, pid, $"process {pid} is livepatch itself: a process cannot trace itself");
        // The runtime reaps the children it starts with waitpid(child): it would consume their ptrace stops and
        // then believe they had exited. A target must not be our own child.
        if (ProcStatus.Number(pid, pid, "PPid:") == Environment.ProcessId)
            throw new TargetException(TargetError.PermissionDenied, pid,
                $"process {pid} is a child of this process: .NET's child-process handling would consume its ptrace stops; start it through a shell or another launcher");
        var session = new PtraceSession(pid);
        try
        {
            session._tracer.Invoke(() =>
            {
                session.Seize(pid, isFirst: true);
                session.SeizeNewThreads();
            });
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="work"/> on the tracer thread (where all ptrace requests must be made).</summary>
    public T OnTracer<T>(Func<T> work) => _tracer.Invoke(work);

    /// <summary>The <c>syscall</c> instruction <see cref="Syscall"/> makes the target execute (found once; reads memory only).</summary>
    public ulong SyscallInstruction => _syscallInstruction ??= FindInExecutableMemory([0x0f, 0x05], "syscall instruction");

    /// <summary>The threads currently stopped by this session.</summary>
    public IReadOnlyList<int> StoppedThreads => [.. _threads.Values.Where(t => t.Stopped).Select(t => t.Tid)];

    /// <summary>
    /// Stops every thread, seizing threads created meanwhile, until a scan of <c>/proc/PID/task</c> finds none new.
    /// Returns the tids of the stopped threads. On timeout resumes everyone and throws naming the threads that did not stop.
    /// Must run on the tracer thread.
    /// </summary>
    public IReadOnlyList<int> StopAll(long deadlineTimestamp)
    {
        RequireTracer();
        while (true)
        {
            foreach (var thread in _threads.Values.Where(t => !t.Stopped).ToList())
                Interrupt(thread);
            WaitUntilStopped(deadlineTimestamp);
            if (!SeizeNewThreads())
                break;
        }
        if (_threads.Count == 0)
            throw new TargetException(TargetError.Exited, Pid, $"process {Pid} exited");
        return StoppedThreads;
    }

    /// <summary>
    /// Resumes every stopped thread, delivering any signal that arrived while it was held; does nothing while the
    /// session holds the process (<see cref="IsHeld"/>). Must run on the tracer thread.
    /// </summary>
    public void ResumeAll()
    {
        RequireTracer();
        if (_held)
            return;
        foreach (var thread in _threads.Values.Where(t => t.Stopped).ToList())
            Resume(thread);
    }

    /// <summary>Stops one thread (the main one if it can) for a short job such as a remote system call. Must run on the tracer thread.</summary>
    public int StopOne(long deadlineTimestamp)
    {
        RequireTracer();
        var thread = _threads.GetValueOrDefault(Pid) ?? _threads.Values.FirstOrDefault()
            ?? throw new TargetException(TargetError.Exited, Pid, $"process {Pid} exited");
        if (!thread.Stopped)
        {
            Interrupt(thread);
            WaitUntilStopped(deadlineTimestamp, thread);
        }
        if (!thread.Stopped)
            throw new TargetException(TargetError.Exited, Pid, $"thread {thread.Tid} of process {Pid} exited");
        return thread.Tid;
    }

    public UserRegisters GetRegisters(int tid)
    {
        RequireTracer();
        var registers = default(UserRegisters);
        unsafe
        {
            if (Libc.Ptrace(Libc.PtraceGetRegs, tid, 0, (nint)(&registers)) < 0)
                throw Failure("PTRACE_GETREGS", tid);
        }
        return registers;
    }

    public void SetRegisters(int tid, in UserRegisters registers)
    {
        RequireTracer();
        var copy = registers;
        unsafe
        {
            if (Libc.Ptrace(Libc.PtraceSetRegs, tid, 0, (nint)(&copy)) < 0)
                throw Failure("PTRACE_SETREGS", tid);
        }
    }

    /// <summary>
    /// Makes the stopped thread <paramref name="tid"/> execute one system call and returns its result
    /// (negative errno on failure). Every register is restored afterwards; no stack is touched.
    /// </summary>
    public long Syscall(int tid, long number, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0)
    {
        RequireTracer();
        var saved = GetRegisters(tid);
        var call = saved;
        var instruction = _syscallInstruction ??= FindInExecutableMemory([0x0f, 0x05], "syscall instruction");
        call.Rip = instruction;
        call.Rax = (ulong)number;
        call.OrigRax = ulong.MaxValue; // not in a system call: keeps the kernel from restarting an interrupted one
        (call.Rdi, call.Rsi, call.Rdx, call.R10, call.R8, call.R9) = ((ulong)a0, (ulong)a1, (ulong)a2, (ulong)a3, (ulong)a4, (ulong)a5);
        SetRegisters(tid, call);
        try
        {
            var thread = _threads[tid];
            while (true)
            {
                if (Libc.Ptrace(Libc.PtraceSingleStep, tid, 0, 0) < 0)
                    throw Failure("PTRACE_SINGLESTEP", tid);
                thread.Stopped = false;
                if (!WaitFor(thread, Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5))
                    throw new TargetException(TargetError.Timeout, Pid, $"thread {tid} of process {Pid} did not come back from a system call made for livepatch");
                var after = GetRegisters(tid);
                if (after.Rip == instruction + 2)
                    return (long)after.Rax;
                // A signal arrived before the instruction ran: it was kept for later; step again.
            }
        }
        finally
        {
            if (_threads.TryGetValue(tid, out var thread) && thread.Stopped)
            {
                SetRegisters(tid, saved);
                // Out of the single step's trap stop into an event stop, where a dead tracer's thread just runs on;
                // signals that came meanwhile go through first, as after a call.
                var held = new List<int>();
                ReturnToEventStop(thread, held);
                if (held.Count > 0)
                    DeliverHeldSignals(thread, held);
            }
        }
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try
        {
            _tracer.Invoke(DetachAll);
        }
        finally
        {
            _tracer.Dispose();
        }
    }

    private void DetachAll()
    {
        _held = false;
        if (ProcStatus.EndOf(Pid) is not null)
        {
            ReapEnded();
            return;
        }
        foreach (var child in _forkedChildren.ToList())
            ReleaseForkedChild(child);
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        foreach (var thread in _threads.Values.Where(t => !t.Stopped).ToList())
            Interrupt(thread);
        try
        {
            WaitUntilStopped(deadline);
        }
        catch (TargetException)
        {
            // Best effort: a thread that will not stop is detached by the kernel when we exit.
        }
        foreach (var thread in _threads.Values.ToList())
        {
            if (thread.Stopped)
                Libc.Ptrace(Libc.PtraceDetach, thread.Tid, 0, thread.PendingSignal);
            _threads.Remove(thread.Tid);
        }
    }

    /// <summary>
    /// Inside a wait, at most every 5 ms (or at once when <paramref name="now"/>): throws <see cref="TargetError.Exited"/>
    /// once every thread of the process is a zombie or gone. A killed process's threads that livepatch holds stopped
    /// die unreported to a wait on the others, and its main thread's exit is reported only after theirs: without
    /// this a wait for them would last until its timeout.
    /// </summary>
    private void ThrowIfEnded(bool now = false)
    {
        var time = Stopwatch.GetTimestamp();
        if (!now && time - _endCheckedAt < Stopwatch.Frequency / 200)
            return;
        _endCheckedAt = time;
        if (ProcStatus.EndOf(Pid) is { } end)
            throw new TargetException(TargetError.Exited, Pid, $"process {Pid} {end}");
    }

    /// <summary>
    /// The process ended: collects every traced thread's exit (the others' first; the main thread's is reported once
    /// they are gone), so that its parent can reap it now rather than when livepatch exits. At most 100 ms.
    /// </summary>
    private void ReapEnded()
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 10;
        while (_threads.Count > 0 && Stopwatch.GetTimestamp() < deadline)
        {
            foreach (var thread in _threads.Values.ToList())
                Poll(thread);
            if (_threads.Count > 0)
                Libc.MicroSleep(100);
        }
        _threads.Clear();
    }

    private void Seize(int tid, bool isFirst)
    {
        if (Libc.Ptrace(Libc.PtraceSeize, tid, 0, _options) >= 0)
        {
            _threads[tid] = new TracedThread(tid);
            return;
        }
        var errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.Eperm && !isFirst && ProcStatus.TracerOf(Pid, tid) is { } ours && ProcStatus.ProcessOf(ours) == Environment.ProcessId)
        {
            // Created by a traced clone: the kernel attached it to us and it starts in a stop, which counts as
            // the stop an interrupt would cause (a second interrupt would leave a trap armed for after resume).
            _threads[tid] = new TracedThread(tid) { InterruptInFlight = true };
            return;
        }
        if (errno == Libc.Esrch && !isFirst)
            return; // the thread exited between the scan and the seize
        if (errno == Libc.Esrch)
            throw Directory.Exists($"/proc/{Pid}") ? new TargetException(TargetError.PermissionDenied, Pid, $"process {Pid} cannot be traced (it is a zombie or a kernel thread)") : TargetException.NotFound(Pid);
        if (errno == Libc.Eperm && !isFirst && IsExiting(tid))
            return; // the kernel refuses to attach to a thread that is already exiting
        if (errno == Libc.Eperm && ProcStatus.TracerOf(Pid, tid) is { } tracer and not 0)
        {
            // TracerPid names the tracing thread; its Tgid is the process.
            var process = ProcStatus.ProcessOf(tracer) ?? tracer;
            throw new TargetException(TargetError.Busy, Pid, $"process {Pid} is busy: it is already traced by process {process} ({CommandName(process)})");
        }
        throw new TargetException(TargetError.PermissionDenied, Pid,
            $"process {Pid}: cannot trace thread {tid}: {Libc.ErrorText(errno)} (run as the process's owner with ptrace allowed, or as root)");
    }

    /// <summary>Seizes the threads listed in /proc/PID/task that are not traced yet; true if there were any.</summary>
    private bool SeizeNewThreads()
    {
        var found = false;
        foreach (var tid in TargetFiles.TaskIds(Pid))
        {
            if (_threads.ContainsKey(tid))
                continue;
            Seize(tid, isFirst: false);
            found |= _threads.ContainsKey(tid);
        }
        return found;
    }

    private void Interrupt(TracedThread thread)
    {
        if (thread.Stopped || thread.InterruptInFlight)
            return;
        if (Libc.Ptrace(Libc.PtraceInterrupt, thread.Tid, 0, 0) < 0)
        {
            if (Marshal.GetLastPInvokeError() == Libc.Esrch)
                _threads.Remove(thread.Tid);
            return;
        }
        thread.InterruptInFlight = true;
    }

    private void Resume(TracedThread thread)
    {
        var signal = thread.PendingSignal;
        thread.PendingSignal = 0;
        thread.Stopped = false;
        if (Libc.Ptrace(Libc.PtraceCont, thread.Tid, 0, signal) < 0 && Marshal.GetLastPInvokeError() == Libc.Esrch)
            _threads.Remove(thread.Tid);
    }

    private void WaitUntilStopped(long deadlineTimestamp, TracedThread? only = null)
    {
        var spins = 0;
        while (true)
        {
            var pending = only is null ? _threads.Values.Where(t => !t.Stopped).ToList() : only.Stopped ? [] : [only];
            if (pending.Count == 0)
                return;
            // The clock is read before the look: a thread that stopped after the look but before the clock
            // said "late" is collected, not reported as stuck (a loaded machine can pause us between the two).
            var late = Stopwatch.GetTimestamp() > deadlineTimestamp;
            foreach (var thread in pending)
                Poll(thread);
            if (pending.All(t => t.Stopped || !_threads.ContainsKey(t.Tid)))
                return;
            ThrowIfEnded(now: late);
            if (late)
            {
                var stuck = string.Join(", ", pending.Where(t => !t.Stopped && _threads.ContainsKey(t.Tid)).Select(t => $"{t.Tid} ({ProcStatus.State(Pid, t.Tid)})"));
                Settle();
                throw new TargetException(TargetError.Timeout, Pid, $"process {Pid}: thread(s) {stuck} did not stop before the timeout");
            }
            // Give the CPU to the threads that must run to enter their stop: on a busy machine they wait for it.
            if (++spins > 4)
                Libc.MicroSleep(20);
        }
    }

    /// <summary>
    /// After a timeout: the threads already interrupted will still stop, so collect their stops (for up to a second)
    /// and let everyone run again. A thread that stops even later is collected by the next stop or by detach.
    /// </summary>
    private void Settle()
    {
        var grace = Stopwatch.GetTimestamp() + Stopwatch.Frequency;
        while (Stopwatch.GetTimestamp() < grace)
        {
            var inFlight = _threads.Values.Where(t => t.InterruptInFlight && !t.Stopped).ToList();
            if (inFlight.Count == 0)
                break;
            foreach (var thread in inFlight)
                Poll(thread);
            if (ProcStatus.EndOf(Pid) is not null)
                return; // nobody is left to resume
            Libc.MicroSleep(50);
        }
        ResumeAll();
    }

    /// <summary>Waits until <paramref name="thread"/> stops; false at the deadline.</summary>
    private bool WaitFor(TracedThread thread, long deadlineTimestamp)
    {
        while (true)
        {
            Poll(thread);
            if (thread.Stopped)
                return true;
            if (!_threads.ContainsKey(thread.Tid))
                throw new TargetException(TargetError.Exited, Pid, $"thread {thread.Tid} of process {Pid} exited");
            ThrowIfEnded();
            if (Stopwatch.GetTimestamp() > deadlineTimestamp)
                return false;
            Libc.MicroSleep(10);
        }
    }

    /// <summary>Collects one wait status of <paramref name="thread"/> without blocking.</summary>
    private int? Poll(TracedThread thread)
    {
        var result = Libc.WaitPid(thread.Tid, out var status, Libc.WNoHang | Libc.WAll);
        if (result == 0)
            return null;
        if (result < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.Eintr)
                return null;
            _threads.Remove(thread.Tid); // ECHILD: it is gone
            return null;
        }
        var terminationSignal = status & 0x7f;
        if (terminationSignal != 0x7f) // exited (0) or killed by a signal
        {
            _threads.Remove(thread.Tid);
            return status;
        }
        if ((status & 0xff) == 0x7f)
        {
            var signal = (status >> 8) & 0xff;
            var ptraceEvent = status >> 16;
            thread.Stopped = true;
            if (ptraceEvent == Libc.PtraceEventStop)
                thread.InterruptInFlight = false;
            else if (ptraceEvent is Libc.PtraceEventClone or Libc.PtraceEventFork or Libc.PtraceEventVfork)
                TrackNewTask(thread.Tid, ptraceEvent);
            // A signal-delivery stop: the signal is the program's, to be delivered when we let it go.
            // Event stops (our interrupt, a group stop) and the trap of our own single step carry nothing.
            if (ptraceEvent == 0 && signal != Libc.Sigtrap)
                thread.PendingSignal = signal;
        }
        return status;
    }

    private TargetException Failure(string request, int tid)
    {
        var errno = Marshal.GetLastPInvokeError();
        if (errno == Libc.Esrch)
        {
            _threads.Remove(tid);
            return new TargetException(TargetError.Exited, Pid, $"thread {tid} of process {Pid} exited during {request}");
        }
        return new TargetException(TargetError.SystemCallFailed, Pid, $"process {Pid}: {request} on thread {tid} failed: {Libc.ErrorText(errno)}");
    }

    private void RequireTracer()
    {
        if (!_tracer.IsCurrent)
            throw new InvalidOperationException("ptrace requests must run on the session's tracer thread (use OnTracer)");
    }

    private static string CommandName(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return "unknown";
        }
    }

    /// <summary>True when the thread is gone or a zombie, or goes within a few milliseconds.</summary>
    private bool IsExiting(int tid)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            string state;
            try
            {
                var stat = File.ReadAllText($"/proc/{Pid}/task/{tid}/stat");
                state = stat[(stat.LastIndexOf(')') + 2)..];
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                return true;
            }
            if (state.StartsWith('Z') || state.StartsWith('X'))
                return true;
            Thread.Sleep(0);
        }
        return false;
    }
}
