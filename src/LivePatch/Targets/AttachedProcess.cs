using System.Diagnostics;

namespace LivePatch.Targets;

/// <summary>
/// A process LivePatch holds with ptrace: every thread seized (so no other livepatch or debugger can act meanwhile)
/// without stopping them. It owns the process's view (<see cref="TargetProcess"/>) and its ptrace session; work that
/// must run before it lets go (putting lock prefixes back) registers with it. Dispose detaches every thread on every
/// path. The site and payload patchers work on one.
/// </summary>
public sealed class AttachedProcess : IPatchTarget, IDisposable
{
    private readonly List<Action> _beforeDetach = [];
    private readonly CancellationTokenSource _detaching = new();
    private bool _inStop;
    private int? _heldForJob;
    private int _disposed;

    private AttachedProcess(TargetProcess process, PtraceSession session)
    {
        Process = process;
        Session = session;
    }

    /// <summary>The process id.</summary>
    public int Pid => Process.Pid;

    /// <summary>The process's modules, symbols, memory map and threads.</summary>
    public TargetProcess Process { get; }

    /// <summary>The ptrace session on every thread.</summary>
    internal PtraceSession Session { get; }

    /// <summary>How long to wait for one thread to stop for a short job (a system call, a hook call); default 1 s.</summary>
    internal TimeSpan StopOneWait { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Cancelled when Dispose begins: a watch running on another thread ends then.</summary>
    internal CancellationToken Detaching => _detaching.Token;

    /// <summary>Attaches to process <paramref name="pid"/>: seizes every thread without stopping it.</summary>
    /// <exception cref="TargetException">No such process, no permission, or it is busy (another tracer).</exception>
    public static AttachedProcess Attach(int pid)
    {
        TargetProcess? process = null;
        try
        {
            process = TargetProcess.Open(pid);
            return new AttachedProcess(process, PtraceSession.Attach(pid));
        }
        catch (Exception error) when (error is not TargetException { Error: TargetError.NotFound } && ProcStatus.EndOf(pid) is { } end)
        {
            process?.Dispose();
            throw new TargetException(TargetError.Exited, pid, $"process {pid} {end} while livepatch attached to it; nothing was changed", error);
        }
        catch
        {
            process?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> (named <paramref name="name"/> for the message) on this process. Should the
    /// process end meanwhile, whatever then failed — a read, a ptrace request, a wait — is reported as what it is:
    /// <see cref="TargetError.Exited"/>, <c>process N exited (killed by SIGKILL) during apply; nothing is left to undo</c>
    /// (its memory, and every change made to it, went with it).
    /// </summary>
    internal T ReportingExit<T>(string name, Func<T> action)
    {
        try
        {
            return action();
        }
        catch (Exception error) when (ProcStatus.EndOf(Pid) is { } end)
        {
            throw new TargetException(TargetError.Exited, Pid, $"process {Pid} {end} during {name}; nothing is left to undo", error);
        }
    }

    /// <summary>Takes over a session started by <see cref="ProgramLauncher"/>.</summary>
    internal static AttachedProcess Adopt(PtraceSession session)
    {
        var process = TargetProcess.Open(session.Pid);
        return new AttachedProcess(process, session);
    }

    /// <summary>Registers work to run before detaching (last registered first); its failures do not stop the detach.</summary>
    internal void BeforeDetach(Action action) => _beforeDetach.Add(action);

    /// <summary>Removes work registered with <see cref="BeforeDetach"/>.</summary>
    internal void CancelBeforeDetach(Action action) => _beforeDetach.Remove(action);

    /// <inheritdoc cref="IPatchTarget.ReadMemory"/>
    internal byte[] ReadMemory(ulong address, int count) => Process.ReadMemory(address, count);

    /// <inheritdoc cref="IPatchTarget.TryReadMemory"/>
    internal bool TryReadMemory(ulong address, Span<byte> destination) => Process.TryReadMemory(address, destination);

    /// <inheritdoc cref="IPatchTarget.WriteMemory"/>
    internal void WriteMemory(ulong address, ReadOnlySpan<byte> bytes) => Process.WriteMemory(address, bytes);

    /// <inheritdoc cref="IPatchTarget.OnControlThread"/>
    internal T OnControlThread<T>(Func<T> work) => Session.OnTracer(work);

    /// <inheritdoc cref="IPatchTarget.StopAll"/>
    internal IReadOnlyList<StoppedThread> StopAll(long deadlineTimestamp)
    {
        var tids = Session.StopAll(deadlineTimestamp);
        _inStop = true;
        var threads = new StoppedThread[tids.Count];
        for (var i = 0; i < tids.Count; i++)
        {
            var registers = Session.GetRegisters(tids[i]);
            threads[i] = new StoppedThread(tids[i], registers.Rip, registers.Rsp) { Registers = ThreadRegisters.From(registers) };
        }
        return threads;
    }

    /// <inheritdoc cref="IPatchTarget.ResumeAll"/>
    internal void ResumeAll()
    {
        _inStop = false;
        Session.ResumeAll();
    }

    /// <inheritdoc cref="IPatchTarget.SetInstructionPointer"/>
    internal void SetInstructionPointer(int tid, ulong rip)
    {
        var registers = Session.GetRegisters(tid);
        registers.Rip = rip;
        Session.SetRegisters(tid, registers);
    }

    /// <inheritdoc cref="IPatchTarget.MapNear"/>
    internal ulong MapNear(ulong nearStart, ulong nearEnd, ulong size, MemoryProtection protection) =>
        WithOneThreadStopped(tid => RemoteMemory.MapNear(Session, tid, nearStart, nearEnd, size, protection));

    /// <inheritdoc cref="IPatchTarget.Unmap"/>
    internal void Unmap(ulong address, ulong size) => WithOneThreadStopped(tid =>
    {
        RemoteMemory.Unmap(Session, tid, address, size);
        return 0;
    });

    /// <summary>
    /// Creates a shared memory file named <paramref name="name"/> mapped read-write in the process (it appears as
    /// <c>/memfd:NAME</c> in its maps and lives as long as the mapping); returns its address.
    /// </summary>
    internal ulong CreateSharedMemory(string name, ulong size) =>
        WithOneThreadStopped(tid => RemoteMemory.CreateSharedMemory(Session, tid, Process.Memory, name, size));

    /// <summary>
    /// Stops one thread (the main one when it can) for a short job, runs <paramref name="work"/> with its id on the
    /// tracer thread, and resumes everyone, whatever happens. Nested in another such job or inside a stop of every
    /// thread, it uses a thread already held and resumes nobody.
    /// </summary>
    internal T WithOneThreadStopped<T>(Func<int, T> work) => Session.OnTracer(() =>
    {
        if (_heldForJob is { } held)
            return work(held);
        if (_inStop && Session.StoppedThreads is [var first, ..] stopped)
            return work(stopped.Contains(Pid) ? Pid : first);
        var tid = Session.StopOne(Stopwatch.GetTimestamp() + (long)(StopOneWait.TotalSeconds * Stopwatch.Frequency));
        _heldForJob = tid;
        try
        {
            return work(tid);
        }
        finally
        {
            _heldForJob = null;
            ResumeAll();
        }
    });

    /// <summary>
    /// Makes one thread call <paramref name="function"/> (System V ABI, no arguments), the other threads running on,
    /// and puts it back as it was (<see cref="PtraceSession.CallFunction"/>).
    /// </summary>
    internal RemoteCallResult CallFunction(ulong function, TimeSpan timeout) =>
        WithOneThreadStopped(tid => Session.CallFunction(tid, function, timeout));

    /// <summary>The <c>syscall</c> instruction livepatch makes the process execute: code there must not be patched.</summary>
    internal ulong SyscallInstruction => Session.SyscallInstruction;

    /// <summary>
    /// With every thread held (inside a stop): have the kernel report each new thread or process and each execve
    /// before they run (<paramref name="on"/>), or stop reporting them.
    /// </summary>
    internal void WatchTasks(bool on) => Session.OnTracer(() =>
    {
        Session.SetOptions(on ? PtraceSession.WatchTaskOptions : 0);
        return 0;
    });

    /// <summary>Lets every thread run until a task event (<see cref="WatchTasks"/> must be on) or cancellation.</summary>
    internal TaskEvent WaitForTaskEvent(CancellationToken cancellation) => Session.OnTracer(() => Session.WaitForTaskEvent(cancellation));

    /// <summary>True when process <paramref name="child"/> shares this process's memory.</summary>
    internal bool SharesMemoryWith(int child) => Session.OnTracer(() => Session.SharesMemoryWith(child));

    /// <summary>Lets a forked child go, running <paramref name="whileStopped"/> first, before it runs.</summary>
    internal void ReleaseForkedChild(int child, Action<int>? whileStopped = null) => Session.OnTracer(() =>
    {
        Session.ReleaseForkedChild(child, whileStopped);
        return 0;
    });

    int IPatchTarget.Pid => Pid;

    TargetProcess IPatchTarget.Process => Process;

    byte[] IPatchTarget.ReadMemory(ulong address, int count) => ReadMemory(address, count);

    bool IPatchTarget.TryReadMemory(ulong address, Span<byte> destination) => TryReadMemory(address, destination);

    void IPatchTarget.WriteMemory(ulong address, ReadOnlySpan<byte> bytes) => WriteMemory(address, bytes);

    T IPatchTarget.OnControlThread<T>(Func<T> work) => OnControlThread(work);

    IReadOnlyList<StoppedThread> IPatchTarget.StopAll(long deadlineTimestamp) => StopAll(deadlineTimestamp);

    void IPatchTarget.ResumeAll() => ResumeAll();

    void IPatchTarget.SetInstructionPointer(int tid, ulong rip) => SetInstructionPointer(tid, rip);

    ulong IPatchTarget.MapNear(ulong nearStart, ulong nearEnd, ulong size, MemoryProtection protection) => MapNear(nearStart, nearEnd, size, protection);

    void IPatchTarget.Unmap(ulong address, ulong size) => Unmap(address, size);

    /// <summary>Runs the work registered to run before detaching, then detaches from every thread.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        try
        {
            _detaching.Cancel();
            for (var i = _beforeDetach.Count - 1; i >= 0; i--)
            {
                try
                {
                    _beforeDetach[i]();
                }
                catch (Exception error) when (error is LivePatchException or OperationCanceledException)
                {
                    // Best effort: the process may be going away; detaching is what matters now.
                }
            }
            Session.Dispose();
        }
        finally
        {
            Process.Dispose();
            _detaching.Dispose();
        }
    }

}
