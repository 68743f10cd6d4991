using Microsoft.Win32.SafeHandles;

namespace LivePatch.Targets;

/// <summary>
/// Reads and writes a process's memory through <c>/proc/PID/mem</c>. Writes go through page protection
/// (the kernel's FOLL_FORCE), so code can be written without an <c>mprotect</c> in the target.
/// </summary>
internal sealed class ProcessMemory : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly int _pid;

    public ProcessMemory(int pid)
    {
        _pid = pid;
        try
        {
            _handle = File.OpenHandle($"/proc/{pid}/mem", FileMode.Open, FileAccess.ReadWrite);
        }
        catch (Exception error) when (error is FileNotFoundException or DirectoryNotFoundException)
        {
            throw TargetException.NotFound(pid);
        }
        catch (UnauthorizedAccessException error)
        {
            throw new TargetException(TargetError.PermissionDenied, pid, $"process {pid}: permission denied opening /proc/{pid}/mem (run as the process's owner with ptrace allowed, or as root)", error);
        }
    }

    public bool TryRead(ulong address, Span<byte> destination)
    {
        try
        {
            return RandomAccess.Read(_handle, destination, checked((long)address)) == destination.Length;
        }
        catch (IOException)
        {
            return false;
        }
    }

    public void Read(ulong address, Span<byte> destination)
    {
        if (!TryRead(address, destination))
            throw Failure("read", address, destination.Length);
    }

    public void Write(ulong address, ReadOnlySpan<byte> bytes)
    {
        try
        {
            RandomAccess.Write(_handle, bytes, checked((long)address));
        }
        catch (IOException error)
        {
            throw Failure("write", address, bytes.Length, error);
        }
    }

    public void Dispose() => _handle.Dispose();

    private TargetException Failure(string what, ulong address, int length, Exception? inner = null)
    {
        var gone = !Directory.Exists($"/proc/{_pid}");
        var message = gone
            ? $"process {_pid} exited during a memory {what}"
            : $"process {_pid}: cannot {what} {length} bytes at 0x{address:x} (not mapped?)";
        var error = gone ? TargetError.Exited : TargetError.SystemCallFailed;
        return inner is null ? new TargetException(error, _pid, message) : new TargetException(error, _pid, message, inner);
    }
}
