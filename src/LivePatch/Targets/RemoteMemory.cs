namespace LivePatch.Targets;

/// <summary>Maps, protects and unmaps memory in a target, and creates shared memory files there, by making one of its stopped threads execute the system calls.</summary>
internal static class RemoteMemory
{
    private const long EExist = 17;
    private const ulong Page = 0x1000;
    private const ulong LowestAddress = 0x10000;

    // rel32 reaches ±2 GiB from the end of the instruction; keep a margin for the size of what is placed.
    private const ulong Reach = (2UL << 30) - (64UL << 20);

    /// <summary>
    /// Maps <paramref name="size"/> bytes of anonymous memory whose every byte is within rel32 reach of every byte of
    /// [<paramref name="nearStart"/>, <paramref name="nearEnd"/>), never replacing an existing mapping.
    /// </summary>
    public static ulong MapNear(PtraceSession session, int tid, ulong nearStart, ulong nearEnd, ulong size, MemoryProtection protection)
    {
        size = RoundUp(size);
        var map = MemoryMap.Read(session.Pid);
        foreach (var candidate in Candidates(map, nearStart, nearEnd, size))
        {
            var result = session.Syscall(tid, SystemCall.Mmap, (long)candidate, (long)size, ProtectionBits(protection),
                SystemCall.MapPrivate | SystemCall.MapAnonymous | SystemCall.MapFixedNoReplace, -1, 0);
            if (result == (long)candidate)
                return candidate;
            if (result == -EExist)
                continue; // something was mapped there since we read the map
            if (result >= 0)
            {
                // A kernel without MAP_FIXED_NOREPLACE treats it as a hint: give back what we did not ask for.
                session.Syscall(tid, SystemCall.Munmap, result, (long)size);
                continue;
            }
            throw new TargetException(TargetError.SystemCallFailed, session.Pid,
                $"process {session.Pid}: mmap of {size} bytes at 0x{candidate:x} failed with errno {-result}");
        }
        throw NoPlaceNear(session.Pid, nearStart, nearEnd, size);
    }

    public static void Protect(PtraceSession session, int tid, ulong address, ulong size, MemoryProtection protection)
    {
        var result = session.Syscall(tid, SystemCall.Mprotect, (long)address, (long)RoundUp(size), ProtectionBits(protection));
        if (result < 0)
            throw new TargetException(TargetError.SystemCallFailed, session.Pid,
                $"process {session.Pid}: mprotect of 0x{address:x} failed with errno {-result}");
    }

    public static void Unmap(PtraceSession session, int tid, ulong address, ulong size)
    {
        var result = session.Syscall(tid, SystemCall.Munmap, (long)address, (long)RoundUp(size));
        if (result < 0)
            throw new TargetException(TargetError.SystemCallFailed, session.Pid,
                $"process {session.Pid}: munmap of 0x{address:x} failed with errno {-result}");
    }

    /// <summary>
    /// Creates a shared memory file (<c>memfd</c>) named <paramref name="name"/> of <paramref name="size"/> bytes in the
    /// target and maps it read-write, shared: memfd_create, ftruncate, mmap, close. The mapping keeps the file alive
    /// and names it in <c>/proc/PID/maps</c> (<c>/memfd:NAME</c>); unmapping it frees it. Returns its address.
    /// </summary>
    public static ulong CreateSharedMemory(PtraceSession session, int tid, ProcessMemory memory, string name, ulong size)
    {
        var scratch = Check(session, "mmap", session.Syscall(tid, SystemCall.Mmap, 0, (long)Page, SystemCall.ProtRead | SystemCall.ProtWrite,
            SystemCall.MapPrivate | SystemCall.MapAnonymous, -1, 0));
        try
        {
            memory.Write((ulong)scratch, System.Text.Encoding.ASCII.GetBytes(name + "\0"));
            var fd = Check(session, "memfd_create", session.Syscall(tid, SystemCall.MemfdCreate, scratch, 1 /* MFD_CLOEXEC */));
            try
            {
                Check(session, "ftruncate", session.Syscall(tid, SystemCall.Ftruncate, fd, (long)size));
                return (ulong)Check(session, "mmap", session.Syscall(tid, SystemCall.Mmap, 0, (long)size, SystemCall.ProtRead | SystemCall.ProtWrite, SystemCall.MapShared, fd, 0));
            }
            finally
            {
                session.Syscall(tid, SystemCall.Close, fd);
            }
        }
        finally
        {
            session.Syscall(tid, SystemCall.Munmap, scratch, (long)Page);
        }

        long Check(PtraceSession session, string call, long result) => SystemCall.IsError(result)
            ? throw new TargetException(TargetError.SystemCallFailed, session.Pid, $"process {session.Pid}: {call} for the shared memory '{name}' failed with errno {-result}")
            : result;
    }

    /// <summary>
    /// Where <see cref="MapNear"/> would put <paramref name="size"/> bytes given <paramref name="map"/> (its first choice:
    /// the nearest free place), or null when nothing in reach is free. Maps nothing.
    /// </summary>
    public static ulong? PlaceNear(MemoryMap map, ulong nearStart, ulong nearEnd, ulong size)
    {
        foreach (var place in Candidates(map, nearStart, nearEnd, RoundUp(size)))
            return place;
        return null;
    }

    /// <summary>The error <see cref="MapNear"/> reports when nothing in reach is free.</summary>
    public static TargetException NoPlaceNear(int pid, ulong nearStart, ulong nearEnd, ulong size) =>
        new(TargetError.SystemCallFailed, pid, $"process {pid}: no free {RoundUp(size)}-byte range within ±2 GiB of 0x{nearStart:x}-0x{nearEnd:x}");

    /// <summary>Free places for <paramref name="size"/> bytes in reach of the anchor range, nearest first.</summary>
    internal static IEnumerable<ulong> Candidates(MemoryMap map, ulong nearStart, ulong nearEnd, ulong size)
    {
        var regions = map.Regions;
        var places = new List<ulong>();
        for (var i = 0; i <= regions.Count; i++)
        {
            var gapStart = i == 0 ? LowestAddress : regions[i - 1].End;
            var gapEnd = i == regions.Count ? 0x7fff_ffff_f000UL : regions[i].Start;
            // Leave room to grow: the brk heap grows up from [heap], the main stack down from [stack].
            if (i > 0 && regions[i - 1].Path == "[heap]")
                gapStart += 64UL << 20;
            if (i < regions.Count && regions[i].Path == "[stack]")
                gapEnd = gapEnd > (64UL << 20) ? gapEnd - (64UL << 20) : 0;
            gapStart += Page; // a guard page on each side
            if (gapEnd < Page || gapEnd - Page < gapStart || gapEnd - Page - gapStart < size)
                continue;
            gapEnd -= Page;
            // The end of the gap nearest the anchor.
            places.Add(gapEnd <= nearStart ? (gapEnd - size) & ~(Page - 1) : RoundUp(gapStart));
        }
        return places.Where(p => InReach(p, p + size, nearStart, nearEnd))
            .OrderBy(p => p < nearStart ? nearStart - p : p - nearStart);
    }

    private static bool InReach(ulong start, ulong end, ulong nearStart, ulong nearEnd)
    {
        var low = Math.Min(start, nearStart);
        var high = Math.Max(end, nearEnd);
        return high - low <= Reach;
    }

    private static long ProtectionBits(MemoryProtection protection) =>
        (protection.HasFlag(MemoryProtection.Read) ? SystemCall.ProtRead : 0) | (protection.HasFlag(MemoryProtection.Write) ? SystemCall.ProtWrite : 0) | (protection.HasFlag(MemoryProtection.Execute) ? SystemCall.ProtExec : 0);

    private static ulong RoundUp(ulong value) => (value + Page - 1) & ~(Page - 1);
}
