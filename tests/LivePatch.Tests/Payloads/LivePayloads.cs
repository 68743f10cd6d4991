using System.Collections.Concurrent;
using System.Text;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Builds the payload fixtures of <c>tests/fixtures/live/</c> with gcc against the repository's
/// <c>native/include</c> (copied next to the tests), and links them at made-up target addresses.
/// </summary>
internal static class LivePayloads
{
    public const ulong Helper = 0x401000;
    public const ulong Counter = 0x404010;
    public const ulong FarPrintf = 0x7f12_3456_7000;
    public const ulong NearPrintf = 0x402000;
    public const ulong TextAddress = 0x50_0000;
    public const ulong ReadOnlyAddress = 0x60_0000;
    public const ulong DataAddress = 0x70_0000;

    /// <summary>The gcc flags of each build of <c>replace.c</c> the tests link, besides -c and -ffunction-sections.</summary>
    public static TheoryData<string> ReplaceBuilds => ["-O0 -fPIC", "-O2 -fPIC", "-O0 -fpie", "-O2 -fpie -fcommon", "-O2 -fno-pic"];

    private static readonly ConcurrentDictionary<string, Lazy<string>> Built = new();

    public static string IncludeDirectory => Path.Combine(AppContext.BaseDirectory, "include");

    /// <summary>The target's symbols as the process side would resolve them: printf far away unless asked otherwise.</summary>
    public static Dictionary<string, ulong> TargetSymbols(ulong printf = FarPrintf) => new(StringComparer.Ordinal)
    {
        ["helper"] = Helper,
        ["counter"] = Counter,
        ["printf"] = printf,
        ["far_table"] = 0x7f00_0000_0000,
        ["tls_counter"] = 0x405000,
    };

    /// <summary>Compiles a fixture once per run with the payload flags plus <paramref name="flags"/>; returns the object's path.</summary>
    public static string Build(string fixture, string flags)
    {
        var name = $"{Path.GetFileNameWithoutExtension(fixture)}{flags.Replace(" ", "", StringComparison.Ordinal)}.o";
        return Built.GetOrAdd(name, n => new Lazy<string>(() => Gcc.Compile(
            $"live/{fixture}", $"-c -ffunction-sections -Wall -Wextra -Werror -I {IncludeDirectory} {flags}", Path.Combine("live", n)))).Value;
    }

    /// <summary>Loads, lays out and links a payload at <see cref="TextAddress"/>, <see cref="ReadOnlyAddress"/>, <see cref="DataAddress"/>.</summary>
    public static LinkedPayload Link(string path, IReadOnlyDictionary<string, ulong> symbols)
    {
        var payload = Payload.Load(path);
        var layout = PayloadLayout.Compute(payload);
        return PayloadLinker.Link(payload, layout, TextAddress, ReadOnlyAddress, DataAddress,
            name => symbols.TryGetValue(name, out var address) ? address : null);
    }

    /// <summary>The region of a linked payload that holds <paramref name="address"/>, or null.</summary>
    public static LinkedRegion? RegionOf(LinkedPayload linked, ulong address) =>
        new[] { linked.Text, linked.ReadOnly, linked.Data }.FirstOrDefault(r => r.Contains(address)) is { Bytes: not null } region
            ? region : null;

    public static ulong ReadUInt64(LinkedPayload linked, ulong address)
    {
        var region = RegionOf(linked, address) ?? throw new InvalidOperationException($"0x{address:x} is in no region");
        return BitConverter.ToUInt64(region.Bytes, (int)(address - region.Address));
    }

    public static string ReadString(LinkedPayload linked, ulong address)
    {
        var region = RegionOf(linked, address) ?? throw new InvalidOperationException($"0x{address:x} is in no region");
        var bytes = region.Bytes.AsSpan((int)(address - region.Address));
        return Encoding.UTF8.GetString(bytes[..bytes.IndexOf((byte)0)]);
    }
}
