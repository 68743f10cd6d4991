namespace LivePatch.Targets;

/// <summary>A thread held while every thread of a target is stopped, with the address it will resume at and its stack pointer.</summary>
/// <param name="Tid">The thread id.</param>
/// <param name="Rip">Its instruction pointer.</param>
/// <param name="Rsp">Its stack pointer.</param>
public readonly record struct StoppedThread(int Tid, ulong Rip, ulong Rsp)
{
    /// <summary>Every general register as the stop read it (the stack unwinder starts from them); unset when only RIP and RSP are known.</summary>
    internal ThreadRegisters Registers { get; init; }
}

/// <summary>
/// A process whose code LivePatch changes, as the rendezvous and the poker see it: read and write its memory, stop
/// and resume its other threads, move a held thread, map memory near an address, and its modules and symbols. A
/// process traced from outside (<see cref="AttachedProcess"/>) implements it today; the current process can
/// implement it for in-process hooks, holding its other threads itself.
/// </summary>
internal interface IPatchTarget
{
    /// <summary>The process id.</summary>
    int Pid { get; }

    /// <summary>The process's modules, symbols, memory map and thread list.</summary>
    TargetProcess Process { get; }

    /// <summary>Reads <paramref name="count"/> bytes at <paramref name="address"/>.</summary>
    /// <exception cref="TargetException">The memory is not mapped or the process is gone.</exception>
    byte[] ReadMemory(ulong address, int count);

    /// <summary>Reads into <paramref name="destination"/> without allocating; false when not all of it is mapped.</summary>
    bool TryReadMemory(ulong address, Span<byte> destination);

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="address"/> in one write, whatever the page protection.</summary>
    void WriteMemory(ulong address, ReadOnlySpan<byte> bytes);

    /// <summary>Runs <paramref name="work"/> on the one thread allowed to stop, inspect and resume the others.</summary>
    T OnControlThread<T>(Func<T> work);

    /// <summary>
    /// Stops every other thread (catching threads created meanwhile) and returns them with their registers; on
    /// timeout resumes everyone and throws naming the threads that did not stop. On the control thread.
    /// </summary>
    IReadOnlyList<StoppedThread> StopAll(long deadlineTimestamp);

    /// <summary>Resumes every thread <see cref="StopAll"/> held, with any signal that came meanwhile. On the control thread.</summary>
    void ResumeAll();

    /// <summary>Sets where a held thread resumes. On the control thread, between <see cref="StopAll"/> and <see cref="ResumeAll"/>.</summary>
    void SetInstructionPointer(int tid, ulong rip);

    /// <summary>Maps <paramref name="size"/> bytes whose every byte is within rel32 reach of [<paramref name="nearStart"/>, <paramref name="nearEnd"/>).</summary>
    ulong MapNear(ulong nearStart, ulong nearEnd, ulong size, MemoryProtection protection);

    /// <summary>Unmaps memory mapped with <see cref="MapNear"/> (inside a stop too).</summary>
    void Unmap(ulong address, ulong size);
}
