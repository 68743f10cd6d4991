using LivePatch.Elf;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

/// <summary>
/// A stripped program whose symbols live in a separate debug file (<c>objcopy --only-keep-debug</c>), found as gdb
/// finds it: by <c>.gnu_debuglink</c> (CRC checked) next to the program, or by build-id under a debug directory.
/// </summary>
[Collection(ProcessTests.Name)]
public class DebugFileTests
{
    /// <summary>
    /// Builds <paramref name="source"/> (worker.c by default) as <paramref name="name"/>.full, then its debug file
    /// (--only-keep-debug) and a stripped copy beside it.
    /// </summary>
    internal static (string Stripped, string Debug, string Directory) Split(string name, string flags = "", string source = "targets/worker.c")
    {
        var directory = ExternalTool.ScratchDirectory("debugfiles");
        var built = Gcc.Compile(source, $"{TestTargets.WorkerFlags} {flags}".Trim(), Path.Combine(directory, name + ".full"));
        var debug = Path.Combine(directory, name + ".debug");
        var stripped = Path.Combine(directory, name);
        ExternalTool.Run("objcopy", "--only-keep-debug", built, debug);
        ExternalTool.Run("strip", "-o", stripped, built);
        return (stripped, debug, directory);
    }

    /// <summary>Puts <paramref name="debug"/> where a debug directory holds the debug file of <paramref name="stripped"/>: <c>ROOT/.build-id/ab/cdef….debug</c>.</summary>
    internal static string UnderBuildId(string root, string stripped, string debug)
    {
        var buildId = ElfFile.Load(stripped).BuildId!;
        var place = Path.Combine(root, ".build-id", buildId[..2], buildId[2..] + ".debug");
        Directory.CreateDirectory(Path.GetDirectoryName(place)!);
        File.Copy(debug, place, overwrite: true);
        return place;
    }

    [Fact]
    public void Static_functions_of_a_stripped_program_resolve_through_its_debuglink()
    {
        var (stripped, debug, directory) = Split("linked");
        ExternalTool.Run("objcopy", $"--add-gnu-debuglink={debug}", stripped);
        using var worker = RunningTarget.StartExecutable(stripped, "1");
        using var target = TargetProcess.Open(worker.Pid);

        var secret = target.ResolveSymbol("secret");

        Assert.Equal(worker.ReadyAddress("secret"), secret.Address);
        Assert.Equal(ElfSymbolBinding.Local, secret.Binding);
        Assert.True(target.MainModule.IsStripped);
        Assert.Equal(debug, target.MainModule.DebugFile);
        Assert.Equal(worker.ReadyAddress("compute"), target.ResolveSymbol("compute").Address);
        var atOffset = target.ResolveSymbol($"linked+0x{ElfFile.Load(debug).FindSymbols("secret")[0].Value:x}");
        Assert.Equal((secret.Name, secret.Address, secret.Size), (atOffset.Name, atOffset.Address, atOffset.Size));
        _ = directory;
    }

    [Fact]
    public void A_debug_file_is_found_by_build_id_and_one_of_another_build_is_never_used()
    {
        var (stripped, debug, directory) = Split("byid");
        var buildId = ElfFile.Load(stripped).BuildId!;
        var debugRoot = Path.Combine(directory, "debug-root");
        Directory.CreateDirectory(Path.Combine(debugRoot, ".build-id", buildId[..2]));
        // Another build of the same source (another build-id), under the right name: it must not be taken.
        var (_, otherDebug, _) = Split("other", "-O1");
        File.Copy(otherDebug, Path.Combine(debugRoot, ".build-id", buildId[..2], buildId[2..] + ".debug"));
        using var worker = RunningTarget.StartExecutable(stripped, "1");
        var previous = Environment.GetEnvironmentVariable("LIVEPATCH_DEBUG_DIR");
        Environment.SetEnvironmentVariable("LIVEPATCH_DEBUG_DIR", debugRoot);
        try
        {
            using (var wrongOne = TargetProcess.Open(worker.Pid))
            {
                var error = Assert.Throws<SymbolResolutionException>(() => wrongOne.ResolveSymbol("secret"));
                Assert.Contains("is stripped and no debug file of it was found", error.Message, StringComparison.Ordinal);
                Assert.Contains($"(build-id {ElfFile.Load(otherDebug).BuildId}, not {buildId})", error.Message, StringComparison.Ordinal);
            }

            File.Copy(debug, Path.Combine(debugRoot, ".build-id", buildId[..2], buildId[2..] + ".debug"), overwrite: true);
            using var target = TargetProcess.Open(worker.Pid);

            Assert.Equal(worker.ReadyAddress("secret"), target.ResolveSymbol("secret").Address);
            Assert.StartsWith(debugRoot, target.MainModule.DebugFile, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable("LIVEPATCH_DEBUG_DIR", previous);
        }
    }

    [Fact]
    public void Debug_directories_given_are_searched_first_and_one_that_does_not_exist_is_refused()
    {
        var (stripped, debug, directory) = Split("given");
        var given = Path.Combine(directory, "given-root");
        var place = UnderBuildId(given, stripped, debug);
        using var worker = RunningTarget.StartExecutable(stripped, "1");
        using var target = TargetProcess.Open(worker.Pid, [given]);

        var secret = target.ResolveSymbol("secret");

        Assert.Equal(worker.ReadyAddress("secret"), secret.Address);
        Assert.Equal(place, target.MainModule.DebugFile);
        Assert.Equal(given, target.DebugDirectories[0]);
        Assert.Equal("/usr/lib/debug", target.DebugDirectories[^1]);
        var missing = Path.Combine(directory, "no-such-dir");
        var error = Assert.Throws<DebugDirectoryNotFoundException>(() => TargetProcess.Open(worker.Pid, [missing]));
        Assert.Equal(FailureKind.Input, error.Kind);
        Assert.Contains(missing, error.Message, StringComparison.Ordinal);
        Assert.Throws<DebugDirectoryNotFoundException>(() => LivePatch.Live.LivePatcher.Attach(worker.Pid, new() { DebugDirectories = [missing] }));
        Assert.Equal(0, RunningTarget.TracerProcess(worker.Pid));
    }
}
