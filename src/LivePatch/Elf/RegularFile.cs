using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LivePatch.Elf;

/// <summary>
/// Reads a file that must be a regular file of bounded size: opened without blocking (a FIFO would wait for a writer
/// for ever), its type and size taken from the open file itself (no race with a rename), then read whole. A device
/// (<c>/dev/zero</c>), a FIFO, a socket or a directory is refused before a byte is read.
/// </summary>
internal static partial class RegularFile
{
    private const int OpenReadOnly = 0;
    private const int OpenNonBlocking = 0x800;
    private const int OpenCloseOnExec = 0x80000;
    private const uint TypeMask = 0xf000;
    private const uint Regular = 0x8000;

    // struct stat on x86-64: st_dev at 0, st_ino at 8, st_mode at 24 (4 bytes), st_size at 48, 144 bytes in all.
    private const int StatSize = 144;
    private const int InodeOffset = 8;
    private const int ModeOffset = 24;
    private const int SizeOffset = 48;

    /// <summary>The bytes of the regular file at <paramref name="path"/> (symbolic links followed).</summary>
    /// <exception cref="IOException">It cannot be opened, is not a regular file, or is larger than <paramref name="maxBytes"/>; the message says which.</exception>
    public static byte[] ReadAll(string path, long maxBytes) => ReadAll(path, maxBytes, out _, out _);

    /// <summary>
    /// The bytes of the regular file at <paramref name="path"/>, with the device (<c>major:minor</c> in hex, as
    /// <c>/proc/PID/maps</c> writes it) and inode of the very file that was read.
    /// </summary>
    /// <exception cref="IOException">It cannot be opened, is not a regular file, or is larger than <paramref name="maxBytes"/>.</exception>
    public static byte[] ReadAll(string path, long maxBytes, out string device, out ulong inode)
    {
        var fd = Open(path, OpenReadOnly | OpenNonBlocking | OpenCloseOnExec);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno == 2 ? new FileNotFoundException($"no such file: {path}", path) : new IOException(Marshal.GetPInvokeErrorMessage(errno));
        }
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        Span<byte> stat = stackalloc byte[StatSize];
        if (FileStatus(fd, ref MemoryMarshal.GetReference(stat)) != 0)
            throw new IOException(Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError()));
        var deviceNumber = BinaryPrimitives.ReadUInt64LittleEndian(stat);
        // glibc's gnu_dev_major and gnu_dev_minor.
        var major = ((deviceNumber >> 8) & 0xfff) | ((deviceNumber >> 32) & ~0xfffUL);
        var minor = (deviceNumber & 0xff) | ((deviceNumber >> 12) & ~0xffUL);
        device = $"{major:x2}:{minor:x2}";
        inode = BinaryPrimitives.ReadUInt64LittleEndian(stat[InodeOffset..]);
        var mode = BinaryPrimitives.ReadUInt32LittleEndian(stat[ModeOffset..]);
        if ((mode & TypeMask) != Regular)
            throw new IOException($"not a regular file (it is {Kind(mode)})");
        var size = BinaryPrimitives.ReadInt64LittleEndian(stat[SizeOffset..]);
        if (size > maxBytes)
            throw new IOException($"{size} bytes, more than the {maxBytes >> 20} MiB it may have");
        var bytes = GC.AllocateUninitializedArray<byte>((int)size);
        var done = 0;
        while (done < bytes.Length)
        {
            var read = RandomAccess.Read(handle, bytes.AsSpan(done), done);
            if (read == 0)
                throw new IOException($"it shrank while being read ({done} of {size} bytes)");
            done += read;
        }
        return bytes;
    }

    private static string Kind(uint mode) => (mode & TypeMask) switch
    {
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x4000 => "a directory",
        0x6000 => "a block device",
        0xc000 => "a socket",
        _ => $"of type 0x{mode & TypeMask:x}",
    };

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    private static partial int FileStatus(int fd, ref byte stat);
}
