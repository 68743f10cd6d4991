using System.Diagnostics;

namespace LivePatch.Tests.Fixtures;

/// <summary>
/// Compiles the C and assembly sources of <c>tests/fixtures/</c> with the system gcc into
/// a temporary directory private to this test run; nothing binary is committed.
/// </summary>
public static class Gcc
{
    private static readonly Lazy<string> RunDirectory = new(CreateRunDirectory);

    /// <summary>The per-run output directory, <c>$TMPDIR/livepatch-tests-&lt;pid&gt;</c>, removed when the run ends.</summary>
    public static string OutputDirectory => RunDirectory.Value;

    /// <summary>Full path of a fixture source copied next to the tests, e.g. <c>FixturePath("elf/sample.c")</c>.</summary>
    public static string FixturePath(string relativePath) =>
        Path.Combine(AppContext.BaseDirectory, "fixtures", relativePath);

    /// <summary>
    /// Runs <c>gcc flags source -o output</c>; a relative <paramref name="output"/> lands in
    /// <see cref="OutputDirectory"/>. Returns the output's full path; throws with gcc's stderr on failure.
    /// </summary>
    public static string Compile(string source, string flags, string output)
    {
        var sourcePath = Path.IsPathRooted(source) ? source : FixturePath(source);
        var outputPath = Path.IsPathRooted(output) ? output : Path.Combine(OutputDirectory, output);
        Directory.CreateDirectory(Path.GetDirectoryName(outputPath)!);

        string[] arguments = [.. flags.Split(' ', StringSplitOptions.RemoveEmptyEntries), sourcePath, "-o", outputPath];
        ExternalTool.Run("gcc", arguments);
        return outputPath;
    }

    private static string CreateRunDirectory()
    {
        RemoveDirectoriesOfEndedRuns();
        var path = Path.Combine(Path.GetTempPath(), $"livepatch-tests-{Environment.ProcessId}");
        Directory.CreateDirectory(path);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(path, recursive: true);
            }
            catch (IOException)
            {
                // Best effort: a leftover directory in /tmp is harmless.
            }
        };
        return path;
    }

    /// <summary>The test host is often killed rather than exited, so each run also sweeps up after dead ones.</summary>
    private static void RemoveDirectoriesOfEndedRuns()
    {
        foreach (var directory in Directory.EnumerateDirectories(Path.GetTempPath(), "livepatch-tests-*"))
        {
            if (!int.TryParse(Path.GetFileName(directory)["livepatch-tests-".Length..], out var pid) || IsRunning(pid))
            {
                continue;
            }

            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                // Another user's or a concurrent sweep's directory: leave it.
            }
        }
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
