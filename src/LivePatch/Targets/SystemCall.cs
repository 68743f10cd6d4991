namespace LivePatch.Targets;

/// <summary>The x86-64 Linux system call numbers LivePatch makes a target (or itself) execute, defined once.</summary>
internal static class SystemCall
{
    public const long Close = 3;
    public const long Mmap = 9;
    public const long Mprotect = 10;
    public const long Munmap = 11;
    public const long Ioctl = 16;
    public const long Getpid = 39;
    public const long Ftruncate = 77;
    public const long Tgkill = 234;
    public const long OpenAt = 257;
    public const long Kcmp = 312;
    public const long MemfdCreate = 319;

    /// <summary>mmap flags and protections, as the kernel's uapi headers give them.</summary>
    public const long MapShared = 0x01;
    public const long MapPrivate = 0x02;
    public const long MapAnonymous = 0x20;
    public const long MapFixedNoReplace = 0x100000;
    public const long ProtRead = 1;
    public const long ProtWrite = 2;
    public const long ProtExec = 4;

    /// <summary>A raw system call's result is an error when it lies in [-4095, -1]: the negated errno.</summary>
    public static bool IsError(long result) => result is < 0 and > -4096;
}
