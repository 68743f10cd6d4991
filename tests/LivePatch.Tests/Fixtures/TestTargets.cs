namespace LivePatch.Tests.Fixtures;

/// <summary>The fixture programs tests start, with the flags they are built with.</summary>
internal static class TestTargets
{
    /// <summary>How targets/worker.c (and most targets) are built: as distributions build, with CET landing pads.</summary>
    public const string WorkerFlags = "-O2 -g -pthread -fcf-protection=full";

    /// <summary>How the build-time site fixtures (tests/fixtures/sites) are built, against native/include.</summary>
    public static string SitesFlags => $"-O2 -g -pthread -Wall -Wextra -Werror -I {Path.Combine(AppContext.BaseDirectory, "include")}";

    /// <summary>targets/calls.c in <paramref name="mode"/>, with its hand-written red-zone checker.</summary>
    public static RunningTarget StartCalls(string mode) =>
        RunningTarget.Start("targets/calls.c", $"-O2 -g -pthread {Gcc.FixturePath("targets/redzone.S")}", mode);

    /// <summary>targets/withlib.c, linked against libscale.so built beside it.</summary>
    public static RunningTarget StartWithLib()
    {
        var directory = ExternalTool.ScratchDirectory("withlib");
        var library = Gcc.Compile("targets/libscale.c", "-O2 -g -shared -fPIC -fcf-protection=full", Path.Combine(directory, "libscale.so"));
        var executable = Gcc.Compile("targets/withlib.c", $"-O2 -g -fcf-protection=full -Wl,--no-as-needed {library} -Wl,-rpath,{directory}", Path.Combine(directory, "withlib-test"));
        return RunningTarget.StartExecutable(executable);
    }
}
