using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LivePatch.Bench.Pause;

/// <summary>
/// bench/pause/target.c running with N busy threads behind a shell (LivePatch refuses to trace its own children),
/// with its shared-memory file. Dispose kills it by PID and removes the file, whatever happened before.
/// </summary>
internal sealed partial class PauseTarget : IDisposable
{
    private readonly Process _shell;
    private bool _disposed;

    private PauseTarget(Process shell, PauseSharedMemory memory)
    {
        _shell = shell;
        Memory = memory;
    }

    /// <summary>The target's own PID, from its ready line (not the shell's).</summary>
    public int Pid { get; private set; }

    /// <summary>Address of compute() in the target.</summary>
    public ulong Compute { get; private set; }

    public int Threads => Memory.Threads;

    public PauseSharedMemory Memory { get; }

    public static PauseTarget Start(string executable, int threads, TimeSpan lifetime)
    {
        var shmPath = $"/dev/shm/livepatch-pause-{Environment.ProcessId}-{threads}-{Guid.NewGuid():N}";
        var memory = new PauseSharedMemory(shmPath, threads);
        Process? shell = null;
        try
        {
            var start = new ProcessStartInfo("/bin/sh")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var argument in new[] { "-c", "\"$0\" \"$@\"; exit $?", executable, threads.ToString(CultureInfo.InvariantCulture), shmPath, ((int)lifetime.TotalSeconds).ToString(CultureInfo.InvariantCulture) })
                start.ArgumentList.Add(argument);
            shell = Process.Start(start) ?? throw new InvalidOperationException("could not start /bin/sh");
            var target = new PauseTarget(shell, memory);
            Live.Register(target);
            target.ReadReadyLine();
            return target;
        }
        catch
        {
            if (shell is not null)
            {
                KillShell(shell);
                shell.Dispose();
            }
            memory.Dispose();
            throw;
        }
    }

    private void ReadReadyLine()
    {
        var stderr = _shell.StandardError.ReadToEndAsync();
        var line = _shell.StandardOutput.ReadLineAsync();
        if (!line.Wait(TimeSpan.FromSeconds(10)) || line.Result is null)
            throw new InvalidOperationException($"the pause target printed no ready line: {(stderr.IsCompleted ? stderr.Result : "")}");
        var now = PauseSharedMemory.Now();
        var match = ReadyLine().Match(line.Result);
        if (!match.Success)
            throw new InvalidOperationException($"unexpected first line from the pause target: {line.Result}");
        Pid = int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        Compute = ulong.Parse(match.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var targetNow = ulong.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture);
        if (targetNow > now || now - targetNow > 5_000_000_000)
            throw new InvalidOperationException($"the target's CLOCK_MONOTONIC ({targetNow}) and Stopwatch ({now}) disagree: stalls cannot be windowed");
        if (!Memory.IsReady)
            throw new InvalidOperationException("the pause target printed its ready line but did not mark the shared memory ready");
    }

    /// <summary>Reads the first <paramref name="count"/> bytes of compute() as they are in the running target.</summary>
    public byte[] ReadCode(int count)
    {
        var bytes = new byte[count];
        using var handle = File.OpenHandle($"/proc/{Pid}/mem");
        if (RandomAccess.Read(handle, bytes, (long)Compute) != count)
            throw new InvalidOperationException($"short read of compute() at 0x{Compute:x} in {Pid}");
        return bytes;
    }

    /// <summary>Each thread's scheduler state from /proc (R running, S sleeping, t stopped by a tracer), for error messages.</summary>
    public string ThreadStates()
    {
        try
        {
            return string.Join(' ', Directory.GetDirectories($"/proc/{Pid}/task").Select(task =>
            {
                var stat = File.ReadAllText(Path.Combine(task, "stat"));
                return $"{Path.GetFileName(task)}:{stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0]}";
            }));
        }
        catch (IOException e)
        {
            return e.Message;
        }
    }

    /// <summary>Threads in tracing stop ('t') right now.</summary>
    public int TracingStoppedThreads() => ThreadStates().Split(' ').Count(s => s.EndsWith(":t", StringComparison.Ordinal));

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        // The target is the shell's child, not ours: kill it by PID; the shell then exits and is reaped.
        if (Pid > 0)
            KillByPid(Pid);
        KillShell(_shell);
        _shell.Dispose();
        Memory.Dispose();
        Live.Unregister(this);
    }

    private static void KillByPid(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            process.Kill();
            process.WaitForExit(5_000);
        }
        catch (ArgumentException)
        {
            // already gone
        }
        catch (InvalidOperationException)
        {
            // exited meanwhile
        }
    }

    private static void KillShell(Process shell)
    {
        try
        {
            if (!shell.HasExited)
                shell.Kill(entireProcessTree: true);
            shell.WaitForExit(5_000);
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
    }

    [GeneratedRegex(@"^ready (\d+) compute=0x([0-9a-f]+) threads=\d+ now=(\d+)$")]
    private static partial Regex ReadyLine();

    /// <summary>Targets not yet disposed, killed at process exit (Ctrl-C, SIGTERM) if the normal path did not get there.</summary>
    private static class Live
    {
        private static readonly HashSet<PauseTarget> Targets = [];

        static Live() => AppDomain.CurrentDomain.ProcessExit += (_, _) => DisposeAll();

        public static void Register(PauseTarget target)
        {
            lock (Targets)
                Targets.Add(target);
        }

        public static void Unregister(PauseTarget target)
        {
            lock (Targets)
                Targets.Remove(target);
        }

        public static void DisposeAll()
        {
            PauseTarget[] left;
            lock (Targets)
                left = [.. Targets];
            foreach (var target in left)
                target.Dispose();
        }
    }
}
