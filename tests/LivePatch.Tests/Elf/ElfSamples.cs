using System.Collections.Concurrent;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Elf;

/// <summary>
/// The ELF files the tests read: <c>fixtures/elf/sample.c</c> compiled in several ways,
/// and real binaries of this machine. Each is built once per run, on first use.
/// </summary>
internal static class ElfSamples
{
    /// <summary>Name of each sample and the gcc flags that produce it (null: a file of this machine).</summary>
    private static readonly Dictionary<string, string?> Flags = new()
    {
        ["sample-O0.o"] = "-c -O0",
        ["sample-O2.o"] = "-c -O2",
        ["sample-fPIC.o"] = "-c -O2 -fPIC",
        ["sample-fno-plt.o"] = "-c -O2 -fPIC -fno-plt",
        ["sample-gotpcrel.o"] = "-c -O0 -fPIC -fno-plt -Wa,-mrelax-relocations=no",
        ["sample-function-sections.o"] = "-c -O2 -ffunction-sections -fdata-sections -fcommon",
        ["sample-pie"] = "-O2 -Wl,--build-id",
        ["sample-nopie"] = "-O0 -fno-pie -no-pie -Wl,--build-id",
        ["sample.so"] = "-O2 -fPIC -shared -Wl,--build-id",
        ["ls"] = null,
        ["libc.so.6"] = null,
        ["dotnet"] = null,
    };

    private static readonly ConcurrentDictionary<string, Lazy<string>> Paths = new();

    /// <summary>Every sample name, for theories.</summary>
    public static TheoryData<string> All => [.. Flags.Keys];

    /// <summary>Full path of the named sample, compiling it first if needed.</summary>
    public static string PathOf(string name) =>
        Paths.GetOrAdd(name, n => new Lazy<string>(() => Build(n))).Value;

    /// <summary>The bytes of the named sample.</summary>
    public static byte[] BytesOf(string name) => File.ReadAllBytes(PathOf(name));

    private static string Build(string name) => name switch
    {
        "ls" => "/bin/ls",
        "libc.so.6" => "/lib/x86_64-linux-gnu/libc.so.6",
        "dotnet" => DotnetHostPath(),
        _ => Gcc.Compile("elf/sample.c", Flags[name]!, Path.Combine("elf", name)),
    };

    private static string DotnetHostPath()
    {
        var directories = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries);
        foreach (var directory in directories)
        {
            var candidate = Path.Combine(directory, "dotnet");
            if (File.Exists(candidate))
            {
                return File.ResolveLinkTarget(candidate, returnFinalTarget: true)?.FullName ?? candidate;
            }
        }

        throw new InvalidOperationException("dotnet is not on PATH");
    }
}
