using System.Diagnostics;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

/// <summary>Starts programs held at their entry point, for patching before any of their code runs (<c>livepatch run</c>).</summary>
public static class ProgramLauncher
{
    /// <summary>
    /// Starts <paramref name="program"/> (searched in PATH when it has no slash) with <paramref name="arguments"/> and
    /// holds it at its entry point: the dynamic loader has mapped its libraries, none of its own code has run. Every
    /// change made through <see cref="LaunchedProgram.Process"/> is done before its first instruction;
    /// <see cref="LaunchedProgram.Start"/> lets it run. The program inherits this process's standard streams unless
    /// <paramref name="redirectOutput"/> (then read <see cref="LaunchedProgram.StandardOutput"/>).
    /// </summary>
    /// <exception cref="FileNotFoundException">No such program.</exception>
    /// <exception cref="TargetException">It could not be started, or ended before its entry point.</exception>
    public static LaunchedProgram Launch(string program, IReadOnlyList<string> arguments, bool redirectOutput = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(program);
        ArgumentNullException.ThrowIfNull(arguments);
        var path = FindProgram(program);
        var session = PtraceSession.Launch(path, arguments, redirectOutput, out var shell);
        try
        {
            return new LaunchedProgram(AttachedProcess.Adopt(session), shell, redirectOutput);
        }
        catch
        {
            Libc.Kill(session.Pid, Libc.Sigkill);
            session.Dispose();
            shell.WaitForExit(5000);
            shell.Dispose();
            throw;
        }
    }

    private static string FindProgram(string program)
    {
        if (program.Contains('/', StringComparison.Ordinal))
            return File.Exists(program) ? Path.GetFullPath(program) : throw new FileNotFoundException($"no program {program}", program);
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, program);
            if (File.Exists(candidate) && !OperatingSystem.IsWindows() && (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
                return candidate;
        }
        throw new FileNotFoundException($"no program '{program}' in PATH", program);
    }
}

/// <summary>
/// A program started by <see cref="ProgramLauncher.Launch"/>: held at its entry point until <see cref="Start"/>.
/// Dispose before Start ends it (none of its code ran); after Start, Dispose detaches and leaves it running.
/// </summary>
public sealed class LaunchedProgram : IDisposable
{
    private readonly Process _shell;
    private readonly bool _redirected;
    private readonly CancellationTokenSource _stopWatching = new();
    private Task<string?>? _watch;
    private bool _disposed;

    internal LaunchedProgram(AttachedProcess process, Process shell, bool redirected)
    {
        Process = process;
        _shell = shell;
        _redirected = redirected;
    }

    /// <summary>The program's process id.</summary>
    public int Pid => Process.Pid;

    /// <summary>The held program: changes made through it complete before the program's first instruction.</summary>
    public AttachedProcess Process { get; }

    /// <summary>True once <see cref="Start"/> let the program run.</summary>
    public bool Started { get; private set; }

    /// <summary>The program's standard output when launched with redirectOutput, else null.</summary>
    public StreamReader? StandardOutput => _redirected ? _shell.StandardOutput : null;

    /// <summary>The program's standard error when launched with redirectOutput, else null.</summary>
    public StreamReader? StandardError => _redirected ? _shell.StandardError : null;

    /// <summary>
    /// Lets the program run. With <paramref name="watch"/> (the lock-prefix watch of a program whose prefixes were
    /// dropped for its single thread), it stays attached in the background while the watch runs — the watch gets a
    /// token cancelled by <see cref="StopWatchingAsync"/> and returns why it ended — then detaches; otherwise it
    /// detaches now.
    /// </summary>
    public void Start(Func<CancellationToken, string>? watch = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Started)
            return;
        Started = true;
        if (watch is null)
        {
            Process.Dispose();
            Watch = Task.FromResult<string?>(null);
            return;
        }
        _watch = Task.Factory.StartNew(() =>
        {
            try
            {
                return (string?)watch(_stopWatching.Token);
            }
            finally
            {
                Process.Dispose();
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        Watch = _watch;
    }

    /// <summary>After <see cref="Start"/>: completes when the program is let go, with why the watch ended (null when there was none).</summary>
    public Task<string?> Watch { get; private set; } = Task.FromResult<string?>(null);

    /// <summary>Waits for the program to end and returns its status as a shell gives it: its exit code, or 128 + the signal that killed it.</summary>
    public async Task<int> WaitForExitAsync(CancellationToken cancellation = default)
    {
        await _shell.WaitForExitAsync(cancellation).ConfigureAwait(false);
        return _shell.ExitCode;
    }

    /// <summary>Stops a running watch and waits for the program to be let go.</summary>
    public async Task StopWatchingAsync()
    {
        await _stopWatching.CancelAsync().ConfigureAwait(false);
        if (_watch is not null)
            await _watch.ConfigureAwait(false);
    }

    /// <summary>Before <see cref="Start"/>: ends the program. After: stops any watch and detaches; the program keeps running.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (!Started)
        {
            Libc.Kill(Pid, Libc.Sigkill);
            Process.Dispose();
            if (!_shell.WaitForExit(5000))
                _shell.Kill(entireProcessTree: true);
        }
        else
        {
            _stopWatching.Cancel();
            try
            {
                _watch?.GetAwaiter().GetResult();
            }
            catch (LivePatchException)
            {
                // The watch's failure was the caller's to observe through Watch; detaching is what matters here.
            }
        }
        _stopWatching.Dispose();
        _shell.Dispose();
    }
}
