using System.Runtime.InteropServices;
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

    /// <summary>
    /// Writes every byte, one <c>pwrite</c> after another. A write that makes no progress ends it: once the target's
    /// memory is gone (it exited) <c>pwrite</c> of <c>/proc/PID/mem</c> returns 0 for ever, where a retrying loop would spin.
    /// </summary>
    public void Write(ulong address, ReadOnlySpan<byte> bytes)
    {
        var offset = checked((long)address);
        var done = 0;
        var handle = _handle.DangerousGetHandle();
        while (done < bytes.Length)
        {
            nint written;
            unsafe
            {
                fixed (byte* from = bytes[done..])
                    written = Native.Libc.PWrite(handle, from, (nuint)(bytes.Length - done), offset + done);
            }
            if (written > 0)
            {
                done += (int)written;
                continue;
            }
            var errno = written < 0 ? Marshal.GetLastPInvokeError() : 0;
            if (errno == Native.Libc.Eintr)
                continue;
            throw Failure("write", address, bytes.Length,
                new IOException(written == 0 ? $"pwrite of /proc/{_pid}/mem wrote nothing at 0x{address + (ulong)done:x}" : Native.Libc.ErrorText(errno)));
        }
    }

    public void Dispose() => _handle.Dispose();

    private TargetException Failure(string what, ulong address, int length, Exception? inner = null)
    {
        var end = ProcStatus.EndOf(_pid);
        var message = end is not null
            ? $"process {_pid} {end} during a memory {what}"
            : $"process {_pid}: cannot {what} {length} bytes at 0x{address:x} (not mapped?)";
        var error = end is not null ? TargetError.Exited : TargetError.SystemCallFailed;
        return inner is null ? new TargetException(error, _pid, message) : new TargetException(error, _pid, message, inner);
    }
}
