using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Cli;

/// <summary>A command line that does not parse, or names no process livepatch can patch: one "livepatch:" line and its exit code, no help text.</summary>
public class UsageErrorTests
{
    [Theory]
    [InlineData(1, "livepatch: 'abc' is not a process id (a positive number, as ps shows it) (see livepatch apply --help)", "apply", "abc", "x.o")]
    [InlineData(1, "livepatch: '-3' is not a process id (a positive number, as ps shows it) (see livepatch list --help)", "list", "--", "-3")]
    [InlineData(1, "livepatch: unrecognized command or argument 'bogus' (see livepatch --help)", "bogus")]
    [InlineData(1, "livepatch: unrecognized command or argument '--frob' (see livepatch apply --help)", "apply", "1", "x.o", "--frob")]
    [InlineData(1, "livepatch: --timeout must be a positive number of milliseconds, not -5 (see livepatch apply --help)", "apply", "1", "x.o", "--timeout", "-5")]
    [InlineData(1, "livepatch: --timeout must be a positive number of milliseconds, not 0 (see livepatch revert --help)", "revert", "1", "fix", "--timeout", "0")]
    [InlineData(1, "livepatch: --timeout must be a positive number of milliseconds, not 0 (see livepatch key --help)", "key", "1", "k", "on", "--timeout", "0")]
    [InlineData(1, "livepatch: cannot parse argument 'soon' for option '--timeout' as expected type 'System.Int32' (see livepatch apply --help)", "apply", "1", "x.o", "--timeout", "soon")]
    [InlineData(1, "livepatch: unrecognized command or argument '\\x1b[31m' (see livepatch --help)", "\u001b[31m")]
    [InlineData(2, "livepatch: process 2 (kthreadd) is a kernel thread: it has no user code to patch", "list", "2")]
    public void One_line_and_the_exit_code_not_the_help(int exitCode, string line, params string[] arguments)
    {
        var result = LivepatchCli.Run(arguments);

        Assert.Equal(exitCode, result.ExitCode);
        Assert.Equal(line, result.Error.TrimEnd());
        Assert.Equal("", result.Output);
    }
}

/// <summary>A payload that is not an ELF file is refused by name, without quoting what it holds (it may be a secret a symlink points to).</summary>
[Collection(ProcessTests.Name)]
public class NotElfPayloadTests
{
    [Fact]
    public void A_file_that_is_not_elf_is_named_and_not_quoted()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var file = Path.Combine(Gcc.OutputDirectory, "secret.o");
        File.WriteAllText(file, "root:$6$secret-hash:19000:0:99999:7:::\n" + new string('x', 100));

        var result = LivepatchCli.Run("check", worker.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), file);

        Assert.Equal(3, result.ExitCode);
        Assert.Equal($"livepatch: payload {file}: malformed ELF: not an ELF file: it does not start with the ELF magic 7f 45 4c 46 [at file offset 0x0]", result.Error.TrimEnd());
        Assert.DoesNotContain("72 6f 6f 74", result.Error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("fifo", "a FIFO")]
    [InlineData("zero", "a character device")]
    [InlineData("directory", "a directory")]
    public void A_payload_path_that_is_no_regular_file_is_refused_before_a_byte_is_read_or_the_process_touched(string kind, string what)
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var path = Path.Combine(Gcc.OutputDirectory, $"not-regular-{kind}-{Guid.NewGuid():n}.o");
        switch (kind)
        {
            case "fifo":
                ExternalTool.Run("mkfifo", path);
                break;
            case "zero":
                File.CreateSymbolicLink(path, "/dev/zero");
                break;
            default:
                Directory.CreateDirectory(path);
                break;
        }

        foreach (var command in new[] { "apply", "load", "check", "replace" })
        {
            var result = LivepatchCli.Run(command, worker.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture), path);

            Assert.Equal(3, result.ExitCode);
            Assert.Equal($"livepatch: payload {path}: cannot read the file: not a regular file (it is {what})", result.Error.TrimEnd());
        }
        Assert.Empty(LivePatch.Live.LivePatcher.List(worker.Pid));
    }
}
