using System.Diagnostics;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.Targets.Native;

namespace LivePatch.Live;

public sealed partial class LivePatcher
{
    /// <summary>
    /// Starts <paramref name="program"/> (searched in PATH when it has no slash) with <paramref name="arguments"/> and
    /// holds it at its entry point: the dynamic loader has mapped its libraries, none of its own code has run. Every
    /// action of <see cref="LaunchedProgram.Patcher"/> (alternatives, call sites, lock prefixes, payloads) is done
    /// before its first instruction; <see cref="LaunchedProgram.Start"/> lets it run. The program inherits this
    /// process's standard streams unless <paramref name="redirectOutput"/> (then read <see cref="LaunchedProgram.StandardOutput"/>).
    /// </summary>
    /// <exception cref="FileNotFoundException">No such program.</exception>
    /// <exception cref="TargetException">It could not be started, or ended before its entry point.</exception>
    public static LaunchedProgram Launch(string program, IReadOnlyList<string> arguments, LivePatchOptions? options = null, bool redirectOutput = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(program);
        ArgumentNullException.ThrowIfNull(arguments);
        var path = FindProgram(program);
        StopWindowCode.EnsureCompiled();
        var session = PtraceSession.Launch(path, arguments, redirectOutput, out var shell);
        TargetProcess? target = null;
        try
        {
            target = TargetProcess.Open(session.Pid);
            return new LaunchedProgram(new LivePatcher(target, session, options ?? new LivePatchOptions()), shell, redirectOutput);
        }
        catch
        {
            target?.Dispose();
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

    /// <summary>The names of the target's modules that carry build-time site tables (sections named <c>.lp.*</c>), the main program first.</summary>
    public IReadOnlyList<string> ModulesWithSites() =>
        [.. _target.Modules.Where(m => m.Elf.Sections.Any(s => s.Name.StartsWith(".lp.", StringComparison.Ordinal)))
            .OrderBy(m => m.IsMainExecutable ? 0 : 1).Select(m => m.Name).Distinct()];

    /// <summary>True while lock prefixes are dropped on a single thread and the next thread must be caught (<see cref="WatchLockPrefixes"/>).</summary>
    public bool IsWatchingLockPrefixes => _watchingLocks;
}

/// <summary>
/// A program started by <see cref="LivePatcher.Launch"/>: held at its entry point until <see cref="Start"/>. Dispose
/// before Start ends it (none of its code ran); after Start, Dispose detaches and leaves it running.
/// </summary>
public sealed class LaunchedProgram : IDisposable
{
    private readonly Process _shell;
    private readonly bool _redirected;
    private readonly CancellationTokenSource _stopWatching = new();
    private Task<LockWatchResult?>? _watch;
    private bool _disposed;

    internal LaunchedProgram(LivePatcher patcher, Process shell, bool redirected)
    {
        Patcher = patcher;
        _shell = shell;
        _redirected = redirected;
    }

    /// <summary>The program's process id.</summary>
    public int Pid => Patcher.Pid;

    /// <summary>The patcher attached to the held program; its actions complete before the program's first instruction.</summary>
    public LivePatcher Patcher { get; }

    /// <summary>True once <see cref="Start"/> let the program run.</summary>
    public bool Started { get; private set; }

    /// <summary>The program's standard output when launched with redirectOutput, else null.</summary>
    public StreamReader? StandardOutput => _redirected ? _shell.StandardOutput : null;

    /// <summary>The program's standard error when launched with redirectOutput, else null.</summary>
    public StreamReader? StandardError => _redirected ? _shell.StandardError : null;

    /// <summary>
    /// Lets the program run. When its lock prefixes were dropped for its single thread, the patcher stays attached in
    /// the background until the program creates a thread (prefixes restored before it runs; see
    /// <see cref="LockWatch"/>), then detaches; otherwise it detaches now.
    /// </summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Started)
            return;
        Started = true;
        if (!Patcher.IsWatchingLockPrefixes)
        {
            Patcher.Dispose();
            LockWatch = Task.FromResult<LockWatchResult?>(null);
            return;
        }
        _watch = Task.Factory.StartNew(() =>
        {
            try
            {
                return (LockWatchResult?)Patcher.WatchLockPrefixes(_stopWatching.Token);
            }
            finally
            {
                Patcher.Dispose();
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        LockWatch = _watch;
    }

    /// <summary>After <see cref="Start"/>: completes when the patcher has let go of the program, with what the lock-prefix watch saw (null when there was none).</summary>
    public Task<LockWatchResult?> LockWatch { get; private set; } = Task.FromResult<LockWatchResult?>(null);

    /// <summary>Waits for the program to end and returns its status as a shell gives it: its exit code, or 128 + the signal that killed it.</summary>
    public async Task<int> WaitForExitAsync(CancellationToken cancellation = default)
    {
        await _shell.WaitForExitAsync(cancellation).ConfigureAwait(false);
        return _shell.ExitCode;
    }

    /// <summary>Stops a running lock-prefix watch (restoring the prefixes) and waits for the patcher to let go.</summary>
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
            Targets.Native.Libc.Kill(Pid, Targets.Native.Libc.Sigkill);
            Patcher.Dispose();
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
            catch (Exception error) when (error is TargetException or PatchRefusedException or TextPokeException)
            {
                // The watch's failure was the caller's to observe through LockWatch; detaching is what matters here.
            }
        }
        _stopWatching.Dispose();
        _shell.Dispose();
    }
}
