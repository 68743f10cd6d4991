using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>How a function called in a target with <see cref="PtraceSession.CallFunction"/> ended.</summary>
internal enum RemoteCallEnd
{
    /// <summary>It returned; <see cref="RemoteCallResult.ReturnValue"/> holds its <c>rax</c>.</summary>
    Returned,

    /// <summary>It faulted (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS raised by its own code, or SIGABRT it raised itself: abort): abandoned, the signal never delivered.</summary>
    Faulted,

    /// <summary>It did not return before the timeout: interrupted and abandoned where it was.</summary>
    TimedOut,
}

/// <summary>What a call made in a target's thread came to; the thread is back exactly as it was before the call.</summary>
/// <param name="End">Returned, faulted or timed out.</param>
/// <param name="ReturnValue">The function's <c>rax</c> when it returned, else 0.</param>
/// <param name="Tid">The thread that made the call.</param>
/// <param name="Elapsed">From the thread's resume to its return, fault or interruption.</param>
/// <param name="Signal">The fault's signal number, or 0.</param>
/// <param name="FaultAddress">The fault's <c>si_addr</c> (the address accessed), or 0.</param>
/// <param name="FaultInstruction">Where the thread was when it faulted, or 0.</param>
internal readonly record struct RemoteCallResult(
    RemoteCallEnd End, ulong ReturnValue, int Tid, TimeSpan Elapsed, int Signal = 0, ulong FaultAddress = 0, ulong FaultInstruction = 0)
{
    /// <summary>The fault's signal by name (<c>SIGSEGV</c>), or its number.</summary>
    public string SignalName => ProcStatus.SignalName(Signal);
}

internal sealed partial class PtraceSession
{
    /// <summary>Integer arguments a call passes in registers (rdi, rsi, rdx, rcx, r8, r9).</summary>
    public const int MaxCallArguments = 6;

    // The System V red zone below RSP belongs to the interrupted code.
    private const ulong RedZone = 128;
    private const ulong TrapFlag = 0x100;
    private const ulong DirectionFlag = 0x400;
    private const ulong Page = 0x1000;

    private const int PtraceSyscall = 24;
    private const int PtraceGetFpRegs = 14;
    private const int PtraceSetFpRegs = 15;
    private const int PtraceGetSigInfo = 0x4202;
    private const int PtraceGetRegSet = 0x4204;
    private const int PtraceSetRegSet = 0x4205;
    private const int NtX86Xstate = 0x202;
    private const int SigInfoSize = 128;
    private const int FxsaveSize = 512;
    private const int SyscallStopCode = 5; // si_code of a syscall stop without PTRACE_O_TRACESYSGOOD: SIGTRAP

    // Larger than any XSAVE area (AMX tiles included); the kernel says how much it filled.
    private const int XstateBufferSize = 64 * 1024;

    // How long signals held back during a call may take to go through once the thread runs again.
    private static readonly TimeSpan DeliveryWindow = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Makes the stopped thread <paramref name="tid"/> call <paramref name="function"/> with up to six integer
    /// <paramref name="arguments"/> (System V ABI) and waits up to <paramref name="timeout"/> for it to return; the other
    /// threads keep their state (running ones run on). Below the thread's red zone go a save area (its registers and
    /// x87/SSE/AVX state) and the call frame, 16-byte aligned at the call, whose return address is a stub mapped for the
    /// call (<see cref="CallReturnStub"/>): its first system call stops the thread for us, and if livepatch dies before
    /// that, the stub puts the thread back by itself. Afterwards every register and the vector state are put back as
    /// they were (a system call the thread was parked in is restarted as before), and signals that arrived for the
    /// thread meanwhile are delivered (before this returns). A fault of the function and a timeout abandon it where it
    /// is. The thread is left in an event stop, from which it runs on cleanly should livepatch die. Must run on the
    /// tracer thread.
    /// </summary>
    /// <exception cref="TargetException">The thread cannot make the call (no room below its stack pointer, no memory for the stub), exited, or never stopped after the timeout.</exception>
    public RemoteCallResult CallFunction(int tid, ulong function, TimeSpan timeout, params ReadOnlySpan<ulong> arguments)
    {
        RequireTracer();
        if (arguments.Length > MaxCallArguments)
            throw new ArgumentException($"a remote call passes at most {MaxCallArguments} arguments, not {arguments.Length}", nameof(arguments));
        if (!_threads.TryGetValue(tid, out var thread) || !thread.Stopped)
            throw new InvalidOperationException($"thread {tid} of process {Pid} must be stopped by this session to make a call");
        var deferred = new List<int>();
        // A thread stopped by a signal of the program (rather than by our interrupt) holds it: let it have it first.
        if (thread.PendingSignal != 0)
            ReturnToEventStop(thread, deferred);

        var saved = GetRegisters(tid);
        var savedFloat = GetFloatState(tid);
        var (frame, saveArea) = CallFrame(tid, saved.Rsp, savedFloat.Bytes.Length);
        var stub = CallReturnStub.Build(savedFloat.IsXsave);
        var page = MapStub(tid, stub, ResumePoint(saved).Rip);
        RemoteCallResult result;
        try
        {
            WriteSaveArea(frame, page, saved, savedFloat);
            var call = saved;
            call.Rip = function;
            call.Rsp = frame;
            call.Rax = 0; // no vector registers for a variadic callee
            call.OrigRax = ulong.MaxValue; // not in a system call: keeps the kernel from restarting an interrupted one into the call
            call.Eflags &= ~(TrapFlag | DirectionFlag);
            Span<ulong> registers = stackalloc ulong[MaxCallArguments];
            arguments.CopyTo(registers);
            (call.Rdi, call.Rsi, call.Rdx, call.Rcx, call.R8, call.R9) = (registers[0], registers[1], registers[2], registers[3], registers[4], registers[5]);
            SetRegisters(tid, call);
            result = RunCall(thread, function, page + (ulong)stub.MarkerEnd, saveArea, timeout, deferred);
            Restore(tid, saved, savedFloat);
        }
        catch
        {
            // A thread that never stopped may still return into the stub: leave it mapped then.
            if (thread.Stopped && _threads.ContainsKey(tid))
            {
                Restore(tid, saved, savedFloat);
                Syscall(tid, SystemCall.Munmap, (long)page, (long)Page);
            }
            throw;
        }
        Syscall(tid, SystemCall.Munmap, (long)page, (long)Page);
        if (deferred.Count > 0)
            DeliverHeldSignals(thread, deferred);
        return result;
    }

    /// <summary>
    /// Runs the call until the stub's marker system call (returned), a fault of the function, or the timeout; every
    /// way it ends, the thread is left in an event stop with the call's registers.
    /// </summary>
    private RemoteCallResult RunCall(TracedThread thread, ulong function, ulong markerEnd, ulong saveArea, TimeSpan timeout, List<int> deferred)
    {
        var tid = thread.Tid;
        var started = Stopwatch.GetTimestamp();
        var deadline = started + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        long? graceEnd = null;
        ResumeStoppingAtSystemCalls(thread);
        while (true)
        {
            var status = Poll(thread);
            if (!_threads.ContainsKey(tid))
                throw new TargetException(TargetError.Exited, Pid, $"thread {tid} of process {Pid} exited while calling the function at 0x{function:x}");
            if (!thread.Stopped)
            {
                ForwardSignalsOfOtherThreads(tid);
                var now = Stopwatch.GetTimestamp();
                if (graceEnd is null && now > deadline)
                {
                    Interrupt(thread);
                    graceEnd = now + Stopwatch.Frequency;
                }
                ThrowIfEnded();
                if (now > graceEnd)
                {
                    throw new TargetException(TargetError.Timeout, Pid,
                        $"thread {tid} of process {Pid} is still running the function called at 0x{function:x} and does not stop ({ProcStatus.State(Pid, tid)}): it was left running it (it puts itself back when it returns)");
                }
                Libc.MicroSleep(20);
                continue;
            }

            var elapsed = Stopwatch.GetElapsedTime(started);
            var signal = (status!.Value >> 8) & 0xff;
            var ptraceEvent = status.Value >> 16;
            if (ptraceEvent == Libc.PtraceEventStop && graceEnd is not null)
                return new RemoteCallResult(RemoteCallEnd.TimedOut, 0, tid, elapsed);
            if (ptraceEvent != 0)
            {
                // A leftover interrupt, a group stop or a task event: the call goes on.
                ResumeStoppingAtSystemCalls(thread);
                continue;
            }

            thread.PendingSignal = 0;
            var info = GetSignalInfo(tid);
            var code = BinaryPrimitives.ReadInt32LittleEndian(info.AsSpan(8));
            if (signal == Libc.Sigtrap && code == SyscallStopCode)
            {
                var registers = GetRegisters(tid);
                if (registers.Rip == markerEnd && registers.OrigRax == CallReturnStub.MarkerSystemCall && registers.Rsp == saveArea)
                {
                    // Let getpid run and stop again before user code: an event stop is safe should livepatch die.
                    ReturnToEventStop(thread, deferred);
                    return new RemoteCallResult(RemoteCallEnd.Returned, registers.Rdi, tid, elapsed);
                }
                ResumeStoppingAtSystemCalls(thread); // a system call of the function itself
                continue;
            }
            // A fault of the function's code (the kernel's signal), or abort(): SIGABRT the thread raised itself.
            if (IsFaultSignal(signal) && code > 0 || signal == SigAbrt && code is SiUser or SiTkill && BinaryPrimitives.ReadInt32LittleEndian(info.AsSpan(16)) == Pid)
            {
                var registers = GetRegisters(tid);
                ReturnToEventStop(thread, deferred); // the fault is dropped
                var address = signal == SigAbrt ? 0 : BinaryPrimitives.ReadUInt64LittleEndian(info.AsSpan(16));
                return new RemoteCallResult(RemoteCallEnd.Faulted, 0, tid, elapsed, signal, address, registers.Rip);
            }
            // The program's signal, sent while the function runs: held back until the thread is its own again.
            deferred.Add(signal);
            ResumeStoppingAtSystemCalls(thread);
        }
    }

    private const int SigAbrt = 6;
    private const int SiUser = 0;
    private const int SiTkill = -6;

    private static bool IsFaultSignal(int signal) => signal is 4 or 5 or 7 or 8 or 11 or 31;

    private void ResumeStoppingAtSystemCalls(TracedThread thread)
    {
        thread.Stopped = false;
        if (Libc.Ptrace(PtraceSyscall, thread.Tid, 0, 0) < 0 && Marshal.GetLastPInvokeError() == Libc.Esrch)
            _threads.Remove(thread.Tid);
    }

    /// <summary>
    /// Brings a stopped thread to an event stop: interrupted, then resumed without a signal, it stops again before it
    /// returns to user code (a system call it was stopped at the entry of runs first). A signal of the program it stops
    /// for meanwhile is given to it (its own pending one at the start), others held back in <paramref name="deferred"/>.
    /// </summary>
    private void ReturnToEventStop(TracedThread thread, List<int> deferred)
    {
        // Interrupt skips a stopped thread; sent now, the trap waits for the resume.
        if (!thread.InterruptInFlight)
        {
            if (Libc.Ptrace(Libc.PtraceInterrupt, thread.Tid, 0, 0) < 0)
                throw Failure("PTRACE_INTERRUPT", thread.Tid);
            thread.InterruptInFlight = true;
        }
        Resume(thread); // with the thread's own pending signal, if it had one
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5;
        while (true)
        {
            var status = Poll(thread);
            if (!_threads.ContainsKey(thread.Tid))
                throw new TargetException(TargetError.Exited, Pid, $"thread {thread.Tid} of process {Pid} exited");
            if (!thread.Stopped)
            {
                ThrowIfEnded();
                if (Stopwatch.GetTimestamp() > deadline)
                    throw new TargetException(TargetError.Timeout, Pid, $"thread {thread.Tid} of process {Pid} did not stop again around a call made for livepatch ({ProcStatus.State(Pid, thread.Tid)})");
                Libc.MicroSleep(20);
                continue;
            }
            if (status!.Value >> 16 == Libc.PtraceEventStop)
                return;
            if (status.Value >> 16 == 0 && thread.PendingSignal != 0)
                deferred.Add(thread.PendingSignal);
            thread.PendingSignal = 0;
            Resume(thread);
        }
    }

    // Threads that run on during the call get the signals sent to them instead of waiting for our next stop.
    private void ForwardSignalsOfOtherThreads(int caller)
    {
        foreach (var other in _threads.Values.Where(t => t.Tid != caller && !t.Stopped).ToList())
        {
            if (Poll(other) is { } status && other.Stopped && status >> 16 == 0 && other.PendingSignal != 0)
                Resume(other);
        }
    }

    // The vector state first: should livepatch die between the two, the thread still holds the call's registers and
    // puts itself back through the stub, whose save area has the same vector state.
    private void Restore(int tid, in UserRegisters registers, FloatState state)
    {
        SetFloatState(tid, state);
        SetRegisters(tid, registers);
    }

    /// <summary>
    /// Delivers the signals held back during the call before the thread is handed back: each is sent again with
    /// tgkill; as a traced thread stops at each signal it gets, the thread runs until each has gone through (or for
    /// <see cref="DeliveryWindow"/> at most: one it blocks stays pending in the kernel) and is then stopped again.
    /// </summary>
    private void DeliverHeldSignals(TracedThread thread, List<int> deferred)
    {
        var remaining = new List<int>(deferred);
        foreach (var signal in deferred)
            Libc.Syscall3(SystemCall.Tgkill, Pid, thread.Tid, signal);
        var deadline = Stopwatch.GetTimestamp() + (long)(DeliveryWindow.TotalSeconds * Stopwatch.Frequency);
        var interrupted = false;
        Resume(thread);
        while (_threads.ContainsKey(thread.Tid))
        {
            var status = Poll(thread);
            if (!thread.Stopped)
            {
                if (!interrupted && (remaining.Count == 0 || Stopwatch.GetTimestamp() > deadline))
                {
                    Interrupt(thread);
                    interrupted = true;
                }
                if (ProcStatus.EndOf(Pid) is not null)
                    return; // the program ended itself with one of them
                Libc.MicroSleep(20);
                continue;
            }
            var signal = (status!.Value >> 8) & 0xff;
            var ptraceEvent = status.Value >> 16;
            if (ptraceEvent == Libc.PtraceEventStop && interrupted)
                return;
            thread.PendingSignal = ptraceEvent == 0 ? signal : 0;
            if (ptraceEvent == 0)
                remaining.Remove(signal);
            Resume(thread);
        }
        // The program ended itself with one of its signals: nothing to hand back.
    }

    /// <summary>
    /// Where the thread resumes and what rax holds when it does, as the kernel leaves them when no signal handler
    /// runs: a system call interrupted with a restart code is executed again (restart_syscall for a restart block).
    /// </summary>
    internal static (ulong Rax, ulong Rip) ResumePoint(in UserRegisters registers)
    {
        if ((long)registers.OrigRax < 0)
            return (registers.Rax, registers.Rip);
        return (long)registers.Rax switch
        {
            -512 or -513 or -514 => (registers.OrigRax, registers.Rip - 2), // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
            -516 => (219, registers.Rip - 2), // ERESTART_RESTARTBLOCK: restart_syscall
            _ => (registers.Rax, registers.Rip),
        };
    }

    /// <summary>
    /// The call frame's address (the return address slot) and the save area's just above it, below the red zone:
    /// the save area 64-byte aligned, so <c>rsp + 8</c> is 16-byte aligned at the function's entry as after a call.
    /// </summary>
    private (ulong Frame, ulong SaveArea) CallFrame(int tid, ulong rsp, int vectorSize)
    {
        var top = rsp - RedZone;
        var saveArea = (top - (ulong)(CallReturnStub.VectorOffset + vectorSize)) & ~63UL;
        var frame = saveArea - 8;
        var region = MemoryMap.Read(Pid).Find(frame);
        if (region is not { } stack || !stack.Protection.HasFlag(MemoryProtection.Write) || !stack.Contains(top - 1))
            throw new TargetException(TargetError.SystemCallFailed, Pid,
                $"process {Pid}: thread {tid} cannot make a call: the {top - frame} bytes below its stack pointer's red zone (0x{frame:x}) are not writable memory");
        return (frame, saveArea);
    }

    /// <summary>Maps a page for the stub with the thread's own mmap and writes the stub, resuming at <paramref name="resume"/>.</summary>
    private ulong MapStub(int tid, CallReturnStub.Code stub, ulong resume)
    {
        var page = Syscall(tid, SystemCall.Mmap, 0, (long)Page, SystemCall.ProtRead | SystemCall.ProtExec, SystemCall.MapPrivate | SystemCall.MapAnonymous, -1, 0);
        if (page is < 0 and > -4096)
            throw new TargetException(TargetError.SystemCallFailed, Pid, $"process {Pid}: mmap of a page for a call failed with errno {-page}");
        var bytes = (byte[])stub.Bytes.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(stub.ResumeSlot), resume);
        try
        {
            using var memory = new ProcessMemory(Pid);
            memory.Write((ulong)page, bytes);
        }
        catch
        {
            Syscall(tid, SystemCall.Munmap, page, (long)Page);
            throw;
        }
        return (ulong)page;
    }

    /// <summary>Writes the return address (the stub) at <paramref name="frame"/> and the save area the stub reads above it.</summary>
    private void WriteSaveArea(ulong frame, ulong stub, in UserRegisters saved, FloatState savedFloat)
    {
        var bytes = new byte[8 + CallReturnStub.VectorOffset + savedFloat.Bytes.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, stub);
        var area = bytes.AsSpan(8);
        var general = CallReturnStub.GeneralRegisters(saved, ResumePoint(saved).Rax);
        for (var i = 0; i < general.Length; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(area[(8 * i)..], general[i]);
        BinaryPrimitives.WriteUInt64LittleEndian(area[(8 * general.Length)..], saved.Eflags);
        BinaryPrimitives.WriteUInt64LittleEndian(area[(8 * (general.Length + 1))..], saved.Rsp);
        savedFloat.Bytes.CopyTo(area[CallReturnStub.VectorOffset..]);
        using var memory = new ProcessMemory(Pid);
        memory.Write(frame, bytes);
    }

    /// <summary>The address of <paramref name="bytes"/> in the target's executable memory, the vDSO first, then libc.</summary>
    private ulong FindInExecutableMemory(ReadOnlySpan<byte> bytes, string what)
    {
        var map = MemoryMap.Read(Pid);
        var executable = map.Regions.Where(r => r.Protection.HasFlag(MemoryProtection.Execute))
            .OrderBy(r => r.Path == "[vdso]" ? 0 : r.Path.Contains("/libc", StringComparison.Ordinal) ? 1 : 2);
        using var memory = new ProcessMemory(Pid);
        foreach (var region in executable)
        {
            if (region.Path == "[vsyscall]")
                continue;
            var length = (int)Math.Min(region.Size, 1 << 20);
            var content = new byte[length];
            if (!memory.TryRead(region.Start, content))
                continue;
            var index = content.AsSpan().IndexOf(bytes);
            if (index >= 0)
                return region.Start + (ulong)index;
        }
        throw new TargetException(TargetError.SystemCallFailed, Pid, $"process {Pid}: no {what} found in its executable memory");
    }

    private byte[] GetSignalInfo(int tid)
    {
        var info = new byte[SigInfoSize];
        unsafe
        {
            fixed (byte* pointer = info)
            {
                if (Libc.Ptrace(PtraceGetSigInfo, tid, 0, (nint)pointer) < 0)
                    throw Failure("PTRACE_GETSIGINFO", tid);
            }
        }
        return info;
    }

    /// <summary>The thread's floating-point and vector state: the whole XSAVE area, or the FXSAVE one on a CPU without XSAVE.</summary>
    private readonly record struct FloatState(byte[] Bytes, bool IsXsave);

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVector
    {
        public nint Base;
        public nuint Length;
    }

    private FloatState GetFloatState(int tid)
    {
        var buffer = new byte[XstateBufferSize];
        unsafe
        {
            fixed (byte* pointer = buffer)
            {
                var vector = new IoVector { Base = (nint)pointer, Length = (nuint)buffer.Length };
                if (Libc.Ptrace(PtraceGetRegSet, tid, NtX86Xstate, (nint)(&vector)) >= 0)
                    return new FloatState(buffer[..(int)vector.Length], IsXsave: true);
                if (Marshal.GetLastPInvokeError() == Libc.Esrch)
                    throw Failure("PTRACE_GETREGSET", tid);
                if (Libc.Ptrace(PtraceGetFpRegs, tid, 0, (nint)pointer) < 0)
                    throw Failure("PTRACE_GETFPREGS", tid);
            }
        }
        return new FloatState(buffer[..FxsaveSize], IsXsave: false);
    }

    private void SetFloatState(int tid, FloatState state)
    {
        unsafe
        {
            fixed (byte* pointer = state.Bytes)
            {
                if (state.IsXsave)
                {
                    var vector = new IoVector { Base = (nint)pointer, Length = (nuint)state.Bytes.Length };
                    if (Libc.Ptrace(PtraceSetRegSet, tid, NtX86Xstate, (nint)(&vector)) < 0)
                        throw Failure("PTRACE_SETREGSET", tid);
                }
                else if (Libc.Ptrace(PtraceSetFpRegs, tid, 0, (nint)pointer) < 0)
                {
                    throw Failure("PTRACE_SETFPREGS", tid);
                }
            }
        }
    }
}
