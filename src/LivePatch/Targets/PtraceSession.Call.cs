using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>How a function called in a target with <see cref="PtraceSession.CallFunction"/> ended.</summary>
internal enum RemoteCallEnd
{
    /// <summary>It returned; <see cref="RemoteCallResult.ReturnValue"/> holds its <c>rax</c>.</summary>
    Returned,

    /// <summary>It faulted (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS raised by its own code): abandoned, the signal never delivered.</summary>
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
    public string SignalName => Signal switch
    {
        4 => "SIGILL",
        5 => "SIGTRAP",
        7 => "SIGBUS",
        8 => "SIGFPE",
        11 => "SIGSEGV",
        31 => "SIGSYS",
        _ => $"signal {Signal}",
    };
}

internal sealed partial class PtraceSession
{
    /// <summary>Integer arguments a call passes in registers (rdi, rsi, rdx, rcx, r8, r9).</summary>
    public const int MaxCallArguments = 6;

    // The System V red zone below RSP belongs to the interrupted code.
    private const ulong RedZone = 128;
    private const ulong TrapFlag = 0x100;
    private const ulong DirectionFlag = 0x400;
    private const int SiKernel = 0x80;

    private const int PtraceGetFpRegs = 14;
    private const int PtraceSetFpRegs = 15;
    private const int PtraceGetSigInfo = 0x4202;
    private const int PtraceSetSigInfo = 0x4203;
    private const int PtraceGetRegSet = 0x4204;
    private const int PtraceSetRegSet = 0x4205;
    private const int NtX86Xstate = 0x202;
    private const int SigInfoSize = 128;
    private const int FxsaveSize = 512;

    // Larger than any XSAVE area (AMX tiles included); the kernel says how much it filled.
    private const int XstateBufferSize = 64 * 1024;

    // How long signals held back during a call may take to go through once the thread runs again.
    private static readonly TimeSpan DeliveryWindow = TimeSpan.FromMilliseconds(100);

    private ulong? _trapInstruction;

    /// <summary>
    /// Makes the stopped thread <paramref name="tid"/> call <paramref name="function"/> with up to six integer
    /// <paramref name="arguments"/> (System V ABI) and waits up to <paramref name="timeout"/> for it to return; the other
    /// threads keep their state (running ones run on). The frame is built below the red zone, 16-byte aligned at the
    /// call, with a return address that is an <c>int3</c> byte of the target's own code, so the return traps back to us.
    /// Afterwards every register, the x87/SSE/AVX state included, is put back as it was (a system call the thread was
    /// parked in is restarted as before), and signals that arrived for the thread meanwhile are delivered once it runs
    /// again (before this returns). A fault of the function and a timeout abandon it where it is. The thread is left
    /// stopped. Must run on the tracer thread.
    /// </summary>
    /// <exception cref="TargetException">The thread cannot make the call (its stack, SIGTRAP ignored), exited, or never stopped after the timeout.</exception>
    public RemoteCallResult CallFunction(int tid, ulong function, TimeSpan timeout, params ReadOnlySpan<ulong> arguments)
    {
        RequireTracer();
        if (arguments.Length > MaxCallArguments)
            throw new ArgumentException($"a remote call passes at most {MaxCallArguments} arguments, not {arguments.Length}", nameof(arguments));
        if (!_threads.TryGetValue(tid, out var thread) || !thread.Stopped)
            throw new InvalidOperationException($"thread {tid} of process {Pid} must be stopped by this session to make a call");
        RefuseTrapThatWouldChangeTheProgram(tid);
        var trap = _trapInstruction ??= FindInExecutableMemory([0xcc], "int3 byte");
        var saved = GetRegisters(tid);
        var savedFloat = GetFloatState(tid);
        var frame = ((saved.Rsp - RedZone) & ~0xfUL) - 8; // rsp + 8 is 16-byte aligned at entry, as after a call
        WriteReturnAddress(tid, frame, trap);

        var call = saved;
        call.Rip = function;
        call.Rsp = frame;
        call.Rax = 0; // no vector registers for a variadic callee
        call.OrigRax = ulong.MaxValue; // not in a system call: keeps the kernel from restarting an interrupted one into the call
        call.Eflags &= ~(TrapFlag | DirectionFlag);
        Span<ulong> registers = stackalloc ulong[MaxCallArguments];
        arguments.CopyTo(registers);
        (call.Rdi, call.Rsi, call.Rdx, call.Rcx, call.R8, call.R9) = (registers[0], registers[1], registers[2], registers[3], registers[4], registers[5]);

        // A thread stopped by a signal of the program (rather than by our interrupt) holds it: it is delivered after the call.
        var deferred = new List<(int Signal, byte[] Info)>();
        if (thread.PendingSignal != 0)
        {
            deferred.Add((thread.PendingSignal, GetSignalInfo(tid)));
            thread.PendingSignal = 0;
        }

        SetRegisters(tid, call);
        RemoteCallResult result;
        try
        {
            result = RunCall(thread, function, trap, frame, timeout, deferred);
        }
        catch
        {
            if (thread.Stopped && _threads.ContainsKey(tid))
                Restore(tid, saved, savedFloat);
            throw;
        }
        Restore(tid, saved, savedFloat);
        if (deferred.Count > 0)
            DeliverHeldSignals(thread, deferred, atSignalStop: result.End != RemoteCallEnd.TimedOut);
        return result;
    }

    private RemoteCallResult RunCall(TracedThread thread, ulong function, ulong trap, ulong frame, TimeSpan timeout, List<(int Signal, byte[] Info)> deferred)
    {
        var tid = thread.Tid;
        var started = Stopwatch.GetTimestamp();
        var deadline = started + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        long? graceEnd = null;
        Resume(thread);
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
                else if (now > graceEnd)
                {
                    throw new TargetException(TargetError.Timeout, Pid,
                        $"thread {tid} of process {Pid} is still running the function called at 0x{function:x} and does not stop ({ThreadState(tid)}): it was left running it");
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
                Resume(thread);
                continue;
            }

            thread.PendingSignal = 0;
            var registers = GetRegisters(tid);
            var info = GetSignalInfo(tid);
            var code = BinaryPrimitives.ReadInt32LittleEndian(info.AsSpan(8));
            if (signal == Libc.Sigtrap && code == SiKernel && registers.Rip == trap + 1 && registers.Rsp == frame + 8)
                return new RemoteCallResult(RemoteCallEnd.Returned, registers.Rax, tid, elapsed);
            if (IsFaultSignal(signal) && code > 0)
                return new RemoteCallResult(RemoteCallEnd.Faulted, 0, tid, elapsed, signal, BinaryPrimitives.ReadUInt64LittleEndian(info.AsSpan(16)), registers.Rip);
            // The program's signal, sent while the function runs: held back until the thread is its own again.
            deferred.Add((signal, info));
            Resume(thread);
        }
    }

    private static bool IsFaultSignal(int signal) => signal is 4 or 5 or 7 or 8 or 11 or 31;

    // Threads that run on during the call get the signals sent to them instead of waiting for our next stop.
    private void ForwardSignalsOfOtherThreads(int caller)
    {
        foreach (var other in _threads.Values.Where(t => t.Tid != caller && !t.Stopped).ToList())
        {
            if (Poll(other) is { } status && other.Stopped && status >> 16 == 0 && other.PendingSignal != 0)
                Resume(other);
        }
    }

    private void Restore(int tid, in UserRegisters registers, FloatState state)
    {
        SetRegisters(tid, registers);
        SetFloatState(tid, state);
    }

    /// <summary>
    /// Delivers the signals held back during the call before the thread is handed back: the first is injected at the
    /// resume when the thread sits in a signal-delivery stop (its siginfo kept), any other is sent again with tgkill
    /// (ptrace injects one per stop). A traced thread stops at each signal it gets, so the thread runs until each has
    /// gone through (or for <see cref="DeliveryWindow"/> at most: one blocked again stays pending in the kernel) and is
    /// then interrupted, so that it is stopped again as the caller expects.
    /// </summary>
    private void DeliverHeldSignals(TracedThread thread, List<(int Signal, byte[] Info)> deferred, bool atSignalStop)
    {
        var remaining = deferred.Select(d => d.Signal).ToList();
        for (var i = 0; i < deferred.Count; i++)
        {
            if (i == 0 && atSignalStop)
            {
                SetSignalInfo(thread.Tid, deferred[0].Info);
                thread.PendingSignal = deferred[0].Signal;
            }
            else
            {
                Libc.Syscall3(Libc.SysTgkill, Pid, thread.Tid, deferred[i].Signal);
            }
        }
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

    private void WriteReturnAddress(int tid, ulong frame, ulong trap)
    {
        var region = MemoryMap.Read(Pid).Find(frame);
        if (region is not { } stack || !stack.Protection.HasFlag(MemoryProtection.Write))
            throw new TargetException(TargetError.SystemCallFailed, Pid,
                $"process {Pid}: thread {tid} cannot make a call: 0x{frame:x}, below its stack pointer's red zone, is not writable memory");
        Span<byte> returnAddress = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(returnAddress, trap);
        using var memory = new ProcessMemory(Pid);
        memory.Write(frame, returnAddress);
    }

    /// <summary>
    /// The call returns through an int3, whose SIGTRAP the kernel forces: were SIGTRAP ignored, or blocked in the thread
    /// while the program catches it, forcing it would reset the program's disposition to the default. Refuse instead.
    /// </summary>
    private void RefuseTrapThatWouldChangeTheProgram(int tid)
    {
        var trap = 1UL << (Libc.Sigtrap - 1);
        var ignored = (SignalSet(tid, "SigIgn:") & trap) != 0;
        var blockedAndCaught = (SignalSet(tid, "SigBlk:") & SignalSet(tid, "SigCgt:") & trap) != 0;
        if (ignored || blockedAndCaught)
            throw new TargetException(TargetError.SystemCallFailed, Pid,
                $"process {Pid}: thread {tid} cannot make a call: the program {(ignored ? "ignores SIGTRAP" : "catches SIGTRAP and the thread blocks it")}, and the call's return trap would reset that");
    }

    private ulong SignalSet(int tid, string field)
    {
        try
        {
            var line = File.ReadLines($"/proc/{Pid}/task/{tid}/status").FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
            return line is null ? 0 : ulong.Parse(line[field.Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or FormatException)
        {
            return 0;
        }
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

    private void SetSignalInfo(int tid, byte[] info)
    {
        unsafe
        {
            fixed (byte* pointer = info)
            {
                if (Libc.Ptrace(PtraceSetSigInfo, tid, 0, (nint)pointer) < 0)
                    throw Failure("PTRACE_SETSIGINFO", tid);
            }
        }
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
