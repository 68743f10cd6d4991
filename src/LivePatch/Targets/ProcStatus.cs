using System.Globalization;

namespace LivePatch.Targets;

/// <summary>
/// Reads single facts from <c>/proc/PID/task/TID/status</c> and <c>/sys</c>: who traces a thread, which CPUs it may
/// run on, its state, how many CPUs are online. A fact that cannot be read is null (the process may be gone).
/// </summary>
internal static class ProcStatus
{
    /// <summary>The text after <paramref name="field"/> (<c>TracerPid:</c>) in a thread's status, trimmed; null when unreadable.</summary>
    public static string? Text(int pid, int tid, string field)
    {
        try
        {
            return Field(File.ReadLines($"/proc/{pid}/task/{tid}/status"), field);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The text after <paramref name="field"/> in the lines of a status file already read, trimmed; null when absent.</summary>
    public static string? Field(IEnumerable<string> status, string field)
    {
        foreach (var line in status)
            if (line.StartsWith(field, StringComparison.Ordinal))
                return line[field.Length..].Trim();
        return null;
    }

    /// <summary>A numeric field of a thread's status (<c>PPid:</c>, <c>Tgid:</c>), or null.</summary>
    public static int? Number(int pid, int tid, string field) =>
        int.TryParse(Text(pid, tid, field), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : null;

    /// <summary>The thread that traces <paramref name="tid"/> (0 when none), or null.</summary>
    public static int? TracerOf(int pid, int tid) => Number(pid, tid, "TracerPid:");

    /// <summary>The process (thread group) of thread <paramref name="tid"/>, or null.</summary>
    public static int? ProcessOf(int tid) => Number(tid, tid, "Tgid:");

    /// <summary>True while the livepatch process <paramref name="livepatch"/> traces process <paramref name="pid"/>.</summary>
    public static bool IsTracedBy(int pid, int livepatch) => TracerOf(pid, pid) is > 0 and var tracer && ProcessOf(tracer) == livepatch;

    /// <summary>The CPUs the thread may run on, as the kernel lists them (<c>0-1</c>, <c>3</c>), or null.</summary>
    public static string? AllowedCpus(int pid, int tid) => Text(pid, tid, "Cpus_allowed_list:");

    /// <summary>The thread's state (<c>S (sleeping)</c>), or <c>gone</c>.</summary>
    public static string State(int pid, int tid) => Text(pid, tid, "State:") ?? "gone";

    /// <summary>
    /// Null while a thread of process <paramref name="pid"/> lives (runs, sleeps or is stopped); once every thread is
    /// exiting, a zombie or gone, how the process ended: from the exit status the kernel keeps for a zombie (<c>exited
    /// (killed by SIGKILL)</c>, <c>exited (status 3)</c>), or just <c>exited</c> when it was already reaped. Threads that are
    /// exiting (their memory may be gone already) are given up to 100 ms to become zombies, so that the status is
    /// known. A main thread that called <c>pthread_exit</c> is a zombie while the others run: the process has not
    /// ended then.
    /// </summary>
    public static string? EndOf(int pid)
    {
        var deadline = Environment.TickCount64 + 100;
        while (true)
        {
            switch (ThreadsOf(pid))
            {
                case ThreadsState.Gone:
                    return "exited";
                case ThreadsState.Living:
                    return null;
                case ThreadsState.Dead:
                    return ExitOf(pid);
                case ThreadsState.Exiting when Environment.TickCount64 > deadline:
                    return "exited";
            }
            Thread.Sleep(1);
        }
    }

    private enum ThreadsState { Living, Exiting, Dead, Gone }

    // PF_EXITING in a stat line's flags field: the thread is in do_exit.
    private const uint ExitingFlag = 0x4;

    private static ThreadsState ThreadsOf(int pid)
    {
        try
        {
            var exiting = false;
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                string stat;
                try
                {
                    stat = File.ReadAllText(Path.Combine(task, "stat"));
                }
                catch (Exception error) when (error is IOException or UnauthorizedAccessException)
                {
                    continue; // the thread was reaped meanwhile
                }
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (fields[0] is "Z" or "X")
                    continue;
                if (fields.Length > 6 && uint.TryParse(fields[6], NumberStyles.Integer, CultureInfo.InvariantCulture, out var flags) && (flags & ExitingFlag) != 0
                    || KillPending(task))
                {
                    exiting = true;
                    continue;
                }
                return ThreadsState.Living;
            }
            return exiting ? ThreadsState.Exiting : ThreadsState.Dead;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return Directory.Exists($"/proc/{pid}") ? ThreadsState.Living : ThreadsState.Gone;
        }
    }

    // SIGKILL pending for the thread or its process: a fatal signal's group exit sends it to every thread, which may
    // wait for a CPU before it starts exiting.
    private static bool KillPending(string task)
    {
        try
        {
            foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                if ((line.StartsWith("SigPnd:", StringComparison.Ordinal) || line.StartsWith("ShdPnd:", StringComparison.Ordinal))
                    && ulong.TryParse(line.AsSpan(7).Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var pending)
                    && (pending & (1UL << (9 - 1))) != 0)
                    return true;
            return false;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return true; // gone meanwhile
        }
    }

    // Field 52, exit_code, holds the status as waitpid reports it (Linux 3.5+).
    private static string ExitOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (fields.Length < 50 || !int.TryParse(fields[49], NumberStyles.Integer, CultureInfo.InvariantCulture, out var status))
                return "exited";
            var signal = status & 0x7f;
            return signal != 0 ? $"exited (killed by {SignalName(signal)})" : $"exited (status {(status >> 8) & 0xff})";
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return "exited";
        }
    }

    /// <summary>A signal's name (<c>SIGKILL</c>), or <c>signal N</c>.</summary>
    public static string SignalName(int signal) => signal switch
    {
        1 => "SIGHUP", 2 => "SIGINT", 3 => "SIGQUIT", 4 => "SIGILL", 5 => "SIGTRAP", 6 => "SIGABRT", 7 => "SIGBUS", 8 => "SIGFPE",
        9 => "SIGKILL", 10 => "SIGUSR1", 11 => "SIGSEGV", 12 => "SIGUSR2", 13 => "SIGPIPE", 14 => "SIGALRM", 15 => "SIGTERM",
        24 => "SIGXCPU", 25 => "SIGXFSZ", 31 => "SIGSYS",
        _ => $"signal {signal}",
    };

    /// <summary>How many CPUs are online (from <c>/sys/devices/system/cpu/online</c>; the runtime's count if unreadable).</summary>
    public static int OnlineCpus()
    {
        try
        {
            var count = 0;
            foreach (var part in File.ReadAllText("/sys/devices/system/cpu/online").Trim().Split(','))
            {
                var range = part.Split('-');
                count += range.Length == 1 ? 1 : int.Parse(range[1], CultureInfo.InvariantCulture) - int.Parse(range[0], CultureInfo.InvariantCulture) + 1;
            }
            return count;
        }
        catch (Exception error) when (error is IOException or FormatException)
        {
            return Environment.ProcessorCount;
        }
    }
}
