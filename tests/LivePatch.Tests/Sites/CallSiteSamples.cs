using System.Collections.Concurrent;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Sites;

/// <summary><c>fixtures/sites/callsites_target.c</c> with <c>callsites_asm.S</c>, linked in several ways, each built once per run.</summary>
internal static class CallSiteSamples
{
    public const string Source = "sites/callsites_target.c";
    public const string AssemblySource = "sites/callsites_asm.S";

    private static readonly Dictionary<string, string> Flags = new()
    {
        ["callsites-pie"] = "-fpie -pie",
        ["callsites-nopie"] = "-fno-pie -no-pie",
        ["callsites.so"] = "-fPIC -shared",
    };

    private static readonly ConcurrentDictionary<string, Lazy<string>> Paths = new();

    /// <summary>Every sample name, for theories.</summary>
    public static TheoryData<string> All => [.. Flags.Keys];

    /// <summary>The flags that build the running target (a PIE, as gcc builds by default here).</summary>
    public static string TargetFlags(string link = "") =>
        $"-O2 -g -pthread -std=gnu11 -Wall -Wextra -Werror -I {Path.Combine(AppContext.BaseDirectory, "include")} {link} {Gcc.FixturePath(AssemblySource)}";

    public static string PathOf(string name) =>
        Paths.GetOrAdd(name, n => new Lazy<string>(() => Gcc.Compile(Source, TargetFlags(Flags[n]), Path.Combine("sites", n)))).Value;

    /// <summary>The ops table's members in declaration order: the site names are <c>platform.MEMBER</c>, the types their indexes.</summary>
    public static readonly string[] Members = ["rdtsc", "identity", "add", "nothing", "missing", "lean", "seven", "pid", "twice"];
}
