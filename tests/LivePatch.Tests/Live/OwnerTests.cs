using System.Diagnostics;
using System.Globalization;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// The owner of a process patches it without root: livepatch run as an unprivileged user (nobody) on that user's own
/// process cannot open <c>/proc/PID/map_files/</c> (it needs CAP_SYS_ADMIN) and reads each module through
/// <c>/proc/PID/root/PATH</c> instead, checked against the mapping's device and inode.
/// </summary>
[Collection(ProcessTests.Name)]
public class OwnerTests
{
    private const string Nobody = "65534";

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void An_unprivileged_owner_lists_symbols_applies_and_reverts_on_its_own_process()
    {
        // Everything the user runs must be readable by it: the test output directory is; a clone may not be.
        var shared = Path.Combine(Gcc.OutputDirectory, "owner");
        Directory.CreateDirectory(shared);
        foreach (var file in Directory.EnumerateFiles(AppContext.BaseDirectory).Where(f => Path.GetFileName(f).StartsWith("livepatch", StringComparison.Ordinal) || f.EndsWith(".dll", StringComparison.Ordinal)))
            File.Copy(file, Path.Combine(shared, Path.GetFileName(file)), overwrite: true);
        var worker = Path.Combine(shared, "worker");
        File.Copy(RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags), worker, overwrite: true);
        var fix = Path.Combine(shared, "fix.o");
        File.Copy(TestPayloads.Build("live/apply/fix.c"), fix, overwrite: true);
        OpenToEveryone(shared);

        using var target = RunningTarget.StartExecutable("setpriv", "--reuid", Nobody, "--regid", Nobody, "--clear-groups", worker, "2");
        Assert.Equal(Nobody, Owner(target.Pid));
        var pid = target.Pid.ToString(CultureInfo.InvariantCulture);

        var symbols = AsNobody(shared, "symbols", pid, "compute");
        Assert.True(symbols.ExitCode == 0, symbols.Error);
        Assert.Contains("compute", symbols.Output, StringComparison.Ordinal);

        var applied = AsNobody(shared, "apply", pid, fix, "--timeout", "2000");
        Assert.True(applied.ExitCode == 0, applied.Error);
        target.AssertValueBecomes("compute", 102);
        var reverted = AsNobody(shared, "revert", pid, "fix", "--timeout", "2000");
        Assert.True(reverted.ExitCode == 0, reverted.Error);
        target.AssertValueBecomes("compute", 3);
    }

    private static LivepatchCli.Result AsNobody(string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo("setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in new[] { "--reuid", Nobody, "--regid", Nobody, "--clear-groups", Path.Combine(directory, "livepatch") }.Concat(arguments))
            start.ArgumentList.Add(argument);
        start.Environment["HOME"] = directory;
        start.Environment["DOTNET_CLI_HOME"] = directory;
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"livepatch {string.Join(' ', arguments)} as nobody did not finish within a minute");
        }
        return new LivepatchCli.Result(process.ExitCode, output, error.Result);
    }

    private static string Owner(int pid) =>
        File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];

    // The directory and every directory above it readable and searchable, its files readable and executable.
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private static void OpenToEveryone(string directory)
    {
        const UnixFileMode open = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        foreach (var file in Directory.EnumerateFiles(directory))
            File.SetUnixFileMode(file, open);
        for (var dir = new DirectoryInfo(directory); dir is not null && dir.FullName != "/tmp"; dir = dir.Parent)
            dir.UnixFileMode |= UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
    }
}
