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
            foreach (var line in File.ReadLines($"/proc/{pid}/task/{tid}/status"))
                if (line.StartsWith(field, StringComparison.Ordinal))
                    return line[field.Length..].Trim();
            return null;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            return null;
        }
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
