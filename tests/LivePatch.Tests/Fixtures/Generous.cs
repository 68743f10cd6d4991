using LivePatch.Live;
using LivePatch.Sites;

namespace LivePatch.Tests.Fixtures;

/// <summary>
/// Settings for tests about something other than the timeout: a loaded CI machine can take longer than 30 ms to stop
/// threads, so their stops get seconds.
/// </summary>
internal static class Generous
{
    /// <summary>How long a stop may take in such tests.</summary>
    public static TimeSpan Timeout { get; } = TimeSpan.FromSeconds(2);

    /// <summary>For a <see cref="LivePatcher"/>.</summary>
    public static LivePatchOptions Options { get; } = new() { Timeout = Timeout };

    /// <summary>For a <see cref="SitePatcher"/>.</summary>
    public static SitePatcherOptions Sites { get; } = new() { Timeout = Timeout };
}
