namespace LivePatch.Targets;

/// <summary>Reads a process's files under <c>/proc/PID/</c>, turning failures into <see cref="TargetException"/>.</summary>
internal static class TargetFiles
{
    public static string ReadAllText(int pid, string name)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/{name}");
        }
        catch (Exception error) when (error is FileNotFoundException or DirectoryNotFoundException)
        {
            throw TargetException.NotFound(pid);
        }
        catch (UnauthorizedAccessException)
        {
            throw new TargetException(TargetError.PermissionDenied, pid, $"process {pid}: permission denied reading /proc/{pid}/{name} (run as the process's owner or root)");
        }
        catch (IOException error) when (!Directory.Exists($"/proc/{pid}"))
        {
            throw new TargetException(TargetError.Exited, pid, $"process {pid} exited while reading /proc/{pid}/{name}: {error.Message}");
        }
    }

    /// <summary>The thread ids listed in <c>/proc/PID/task</c>, in ascending order.</summary>
    public static List<int> TaskIds(int pid)
    {
        try
        {
            var ids = new List<int>();
            foreach (var entry in Directory.GetDirectories($"/proc/{pid}/task"))
                if (int.TryParse(Path.GetFileName(entry), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var tid))
                    ids.Add(tid);
            ids.Sort();
            return ids;
        }
        catch (DirectoryNotFoundException)
        {
            throw new TargetException(TargetError.Exited, pid, $"process {pid} exited");
        }
    }
}
