using System.Runtime.InteropServices;

namespace LivePatch.Targets.Native;

/// <summary>
/// The stream decoder of the system's liblzma (xz-utils; on every Debian, since dpkg needs it): enough to read the
/// xz-compressed ELF of a module's <c>.gnu_debugdata</c>.
/// </summary>
internal static unsafe partial class Lzma
{
    public const string Library = "liblzma.so.5";

    public const int Ok = 0;
    public const int StreamEnd = 1;

    /// <summary><c>LZMA_FINISH</c>: all the input is given; decode to the end of the stream.</summary>
    public const int Finish = 3;

    [LibraryImport(Library, EntryPoint = "lzma_stream_decoder")]
    public static partial int StreamDecoder(LzmaStream* stream, ulong memoryLimit, uint flags);

    [LibraryImport(Library, EntryPoint = "lzma_code")]
    public static partial int Code(LzmaStream* stream, int action);

    [LibraryImport(Library, EntryPoint = "lzma_end")]
    public static partial void End(LzmaStream* stream);

    /// <summary>What an <c>lzma_ret</c> means, in liblzma's words.</summary>
    public static string Describe(int result) => result switch
    {
        2 => "no integrity check",
        3 => "unsupported integrity check",
        5 => "out of memory",
        6 => "the memory limit was reached",
        7 => "not in xz format",
        8 => "unsupported options",
        9 => "corrupt data",
        10 => "truncated data",
        11 => "programming error",
        _ => $"liblzma error {result}",
    };
}

/// <summary>liblzma's <c>lzma_stream</c> (lzma/base.h); all zero is <c>LZMA_STREAM_INIT</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct LzmaStream
{
    public byte* NextIn;
    public nuint AvailIn;
    public ulong TotalIn;
    public byte* NextOut;
    public nuint AvailOut;
    public ulong TotalOut;
    public nint Allocator;
    public nint Internal;
    public nint ReservedPointer1, ReservedPointer2, ReservedPointer3, ReservedPointer4;
    public ulong ReservedInt1, ReservedInt2;
    public nuint ReservedInt3, ReservedInt4;
    public int ReservedEnum1, ReservedEnum2;
}
