using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;
using Microsoft.Win32.SafeHandles;

namespace LivePatch.Targets;

/// <summary>
/// Finds the mapping that holds an address in another process, cheaply enough for code running inside a stop. On
/// Linux 6.11 and later each lookup is one <c>PROCMAP_QUERY</c> ioctl on <c>/proc/PID/maps</c> (about a
/// microsecond, whatever the number of mappings); before that, the file's text is read once per
/// <see cref="Refresh"/> into reused buffers and only the bounds of each line are parsed, with no strings built. The
/// text costs the kernel about half a microsecond per mapping to produce, which is what makes the ioctl worth having.
/// </summary>
internal sealed class MappingBounds
{
    private const long AtCurrentDirectory = -100;
    private const long OpenReadOnlyCloseOnExec = 0x80000;
    private const int Enotty = 25;
    private const int Einval = 22;

    // _IOWR('f', 17, struct procmap_query): include/uapi/linux/fs.h.
    private const long ProcMapQuery = (3L << 30) | ((long)ProcMapQueryArguments.Size << 16) | ('f' << 8) | 17;

    private readonly int _pid;
    private readonly string _path;
    private readonly byte[] _pathBytes;
    private long _fd = -1;
    private SafeFileHandle? _handle;
    private bool _textOnly;
    private byte[] _text = new byte[16 << 10];
    private ulong[] _bounds = new ulong[512];
    private int _count;

    /// <summary>Lookups in process <paramref name="pid"/>; <paramref name="readText"/> skips the ioctl (tests compare both ways).</summary>
    public MappingBounds(int pid, bool readText = false)
    {
        _pid = pid;
        _path = $"/proc/{pid}/maps";
        _pathBytes = System.Text.Encoding.UTF8.GetBytes(_path + "\0");
        _textOnly = readText;
    }

    /// <summary>True once the kernel turned the ioctl down and lookups read the text instead.</summary>
    public bool ReadsText => _textOnly;

    /// <summary>
    /// Opens the maps file for lookups of the mappings as they are now (reading its text when the kernel has no
    /// <c>PROCMAP_QUERY</c>); <see cref="Release"/> closes it. Throws <see cref="TargetException"/> when the process is gone.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Refresh()
    {
        Release();
        if (_textOnly)
        {
            OpenText();
            return;
        }
        // A bare openat: the ioctl needs only the descriptor, and a managed file handle costs several system calls more.
        unsafe
        {
            fixed (byte* path = _pathBytes)
                _fd = Libc.Syscall3(SystemCall.OpenAt, AtCurrentDirectory, (long)path, OpenReadOnlyCloseOnExec);
        }
        if (_fd < 0)
            throw Failure(Libc.ErrorText(Marshal.GetLastPInvokeError()));
    }

    /// <summary>Closes the maps file.</summary>
    public void Release()
    {
        if (_fd >= 0)
            Libc.Syscall3(SystemCall.Close, _fd, 0, 0);
        _fd = -1;
        _handle?.Dispose();
        _handle = null;
    }

    /// <summary>The [start, end) of the mapping holding <paramref name="address"/>, or null when none does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public (ulong Start, ulong End)? Find(ulong address)
    {
        if (!_textOnly)
        {
            if (_fd < 0)
                throw new InvalidOperationException("MappingBounds.Find before Refresh");
            var query = new ProcMapQueryArguments { StructSize = ProcMapQueryArguments.Size, QueryAddress = address };
            long result;
            unsafe
            {
                result = Libc.Syscall3(SystemCall.Ioctl, _fd, ProcMapQuery, (long)&query);
            }
            if (result == 0)
                return (query.VmaStart, query.VmaEnd);
            var errno = Marshal.GetLastPInvokeError();
            if (errno is not (Enotty or Einval))
                return null; // ENOENT: nothing mapped there
            _textOnly = true; // an older kernel: read the text from now on
            Release();
            OpenText();
        }
        if (_handle is null)
            throw new InvalidOperationException("MappingBounds.Find before Refresh");
        return FindInText(address);
    }

    private void OpenText()
    {
        try
        {
            _handle = File.OpenHandle(_path);
            ReadText(_handle);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            Release();
            throw Failure(error.Message);
        }
    }

    private TargetException Failure(string why) =>
        new(Directory.Exists($"/proc/{_pid}") ? TargetError.SystemCallFailed : TargetError.Exited, _pid, $"process {_pid}: cannot read {_path}: {why}");

    private (ulong Start, ulong End)? FindInText(ulong address)
    {
        // Lines are in address order: binary search on the starts.
        int low = 0, high = _count - 1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            var start = _bounds[2 * middle];
            var end = _bounds[2 * middle + 1];
            if (address < start)
                high = middle - 1;
            else if (address >= end)
                low = middle + 1;
            else
                return (start, end);
        }
        return null;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ReadText(SafeFileHandle handle)
    {
        var length = 0;
        while (true)
        {
            if (length == _text.Length)
                Array.Resize(ref _text, _text.Length * 2);
            var read = RandomAccess.Read(handle, _text.AsSpan(length), length);
            if (read == 0)
                break;
            length += read;
        }
        Parse(_text.AsSpan(0, length));
    }

    // Each line begins "start-end " in hex; the rest of it is skipped.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Parse(ReadOnlySpan<byte> text)
    {
        _count = 0;
        var position = 0;
        while (position < text.Length)
        {
            var start = Hex(text, ref position);
            position++; // '-'
            var end = Hex(text, ref position);
            var newline = text[position..].IndexOf((byte)'\n');
            position = newline < 0 ? text.Length : position + newline + 1;
            if (2 * _count + 2 > _bounds.Length)
                Array.Resize(ref _bounds, _bounds.Length * 2);
            _bounds[2 * _count] = start;
            _bounds[2 * _count + 1] = end;
            _count++;
        }
    }

    private static ulong Hex(ReadOnlySpan<byte> text, ref int position)
    {
        ulong value = 0;
        for (; position < text.Length; position++)
        {
            var c = text[position];
            var digit = c is >= (byte)'0' and <= (byte)'9' ? c - '0' : c is >= (byte)'a' and <= (byte)'f' ? c - 'a' + 10 : -1;
            if (digit < 0)
                break;
            value = (value << 4) | (uint)digit;
        }
        return value;
    }

    /// <summary>The kernel's <c>struct procmap_query</c> (104 bytes); only the covering VMA's bounds are asked for.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct ProcMapQueryArguments
    {
        public const int Size = 104;

        public ulong StructSize;
        public ulong QueryFlags;
        public ulong QueryAddress;
        public ulong VmaStart;
        public ulong VmaEnd;
        public ulong VmaFlags;
        public ulong VmaPageSize;
        public ulong VmaOffset;
        public ulong Inode;
        public uint DevMajor;
        public uint DevMinor;
        public uint VmaNameSize;
        public uint BuildIdSize;
        public ulong VmaNameAddress;
        public ulong BuildIdAddress;
    }
}
