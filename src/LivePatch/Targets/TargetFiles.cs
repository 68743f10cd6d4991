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
}
