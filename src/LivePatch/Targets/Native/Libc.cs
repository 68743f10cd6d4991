using System.Runtime.InteropServices;

namespace LivePatch.Targets.Native;

/// <summary>The few libc entry points tracing needs. Every call sets errno for <see cref="Marshal.GetLastPInvokeError"/>.</summary>
internal static partial class Libc
{
    public const int PtraceGetRegs = 12;
    public const int PtraceSetRegs = 13;
    public const int PtraceCont = 7;
    public const int PtraceSingleStep = 9;
    public const int PtraceDetach = 17;
    public const int PtraceSeize = 0x4206;
    public const int PtraceInterrupt = 0x4207;
    public const int PtraceSetOptions = 0x4200;
    public const int PtraceGetEventMsg = 0x4201;
    public const int PtraceListen = 0x4208;

    public const int PtraceOptionTraceFork = 0x2;
    public const int PtraceOptionTraceVfork = 0x4;
    public const int PtraceOptionTraceClone = 0x8;
    public const int PtraceOptionTraceExec = 0x10;

    public const int PtraceEventFork = 1;
    public const int PtraceEventVfork = 2;
    public const int PtraceEventClone = 3;
    public const int PtraceEventExec = 4;
    public const int PtraceEventStop = 128;

    public const int WNoHang = 1;
    public const int WAll = 0x40000000;

    public const int Sigtrap = 5;
    public const int Sigstop = 19;
    public const int Sigcont = 18;
    public const int Sigkill = 9;
    public const int Sigtstp = 20;
    public const int Sigttin = 21;
    public const int Sigttou = 22;

    public const int Esrch = 3;
    public const int Eperm = 1;
    public const int Echild = 10;
    public const int Eintr = 4;

    [LibraryImport("libc", EntryPoint = "ptrace", SetLastError = true)]
    public static partial long Ptrace(long request, int pid, nint address, nint data);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, out int status, int options);

    public const int SchedFifo = 1;

    [LibraryImport("libc", EntryPoint = "sched_setscheduler", SetLastError = true)]
    public static partial int SchedSetScheduler(int pid, int policy, in int priority);

    [LibraryImport("libc", EntryPoint = "usleep", SetLastError = true)]
    public static partial int MicroSleep(uint microseconds);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    public static partial long Syscall3(long number, long a, long b, long c);

    public const int KcmpVm = 1;

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    public static unsafe partial nint PWrite(nint fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    public static string ErrorText(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}

/// <summary>The kernel's <c>struct user_regs_struct</c> for x86-64, as PTRACE_GETREGS fills it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct UserRegisters
{
    public ulong R15, R14, R13, R12, Rbp, Rbx, R11, R10, R9, R8, Rax, Rcx, Rdx, Rsi, Rdi, OrigRax, Rip, Cs, Eflags, Rsp, Ss, FsBase, GsBase, Ds, Es, Fs, Gs;
}
