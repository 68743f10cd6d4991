using System.Diagnostics;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

internal sealed partial class PtraceSession
{
    /// <summary>
    /// Moves a thread from the signal-delivery stop its remote system call or call ended in (SIGTRAP of the single step
    /// or of the int3 return) to an event stop, with its registers as they are now. If livepatch dies while a thread
    /// sits in a signal-delivery stop, the kernel hands that SIGTRAP to the untraced thread and the process dies of
    /// it (and a single step's trap flag stays set); a thread in an event stop just runs on. PTRACE_CONT ends the
    /// stop without a signal and clears the single step, and the interrupt sent before it stops the thread again
    /// before it leaves the kernel.
    /// </summary>
    private void ParkInEventStop(TracedThread thread)
    {
        if (Libc.Ptrace(Libc.PtraceInterrupt, thread.Tid, 0, 0) < 0)
            throw Failure("PTRACE_INTERRUPT", thread.Tid);
        thread.InterruptInFlight = true;
        if (Libc.Ptrace(Libc.PtraceCont, thread.Tid, 0, 0) < 0)
            throw Failure("PTRACE_CONT", thread.Tid);
        thread.Stopped = false;
        if (!WaitFor(thread, Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5))
            throw new TargetException(TargetError.Timeout, Pid, $"thread {thread.Tid} of process {Pid} did not stop again after a call made for livepatch");
    }
}
