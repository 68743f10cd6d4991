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
    private static (string Stripped, string Debug, string Directory) Split(string name, string flags = "")
    {
        var directory = ExternalTool.ScratchDirectory("debugfiles");
        var built = Gcc.Compile("targets/worker.c", $"{TestTargets.WorkerFlags} {flags}".Trim(), Path.Combine(directory, name + ".full"));
        var debug = Path.Combine(directory, name + ".debug");
        var stripped = Path.Combine(directory, name);
        ExternalTool.Run("objcopy", "--only-keep-debug", built, debug);
        ExternalTool.Run("strip", "-o", stripped, built);
        return (stripped, debug, directory);
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
}
