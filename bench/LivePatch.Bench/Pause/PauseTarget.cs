using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Pause;

/// <summary>
/// bench/pause/target.c running with N busy threads behind a shell (LivePatch refuses to trace its own children),
/// with its shared-memory file. Dispose kills it by PID and removes the file, whatever happened before.
/// </summary>
internal sealed partial class PauseTarget : IDisposable
{
    private readonly ShellTarget _process;
    private bool _disposed;

    private PauseTarget(ShellTarget process, PauseSharedMemory memory)
    {
        _process = process;
        Memory = memory;
        Compute = ulong.Parse(process.Ready.Groups[2].ValueSpan, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    /// <summary>The target's own PID, from its ready line (not the shell's).</summary>
    public int Pid => _process.Pid;

    /// <summary>Address of compute() in the target.</summary>
    public ulong Compute { get; }

    public int Threads => Memory.Threads;

    public PauseSharedMemory Memory { get; }

    public static PauseTarget Start(string executable, int threads, TimeSpan lifetime, CancellationToken cancel)
    {
        var shmPath = $"/dev/shm/livepatch-pause-{Environment.ProcessId}-{threads}-{Guid.NewGuid():N}";
        var memory = new PauseSharedMemory(shmPath, threads);
        ShellTarget? process = null;
        PauseTarget? target = null;
        try
        {
            process = ShellTarget.Start("pause target", executable,
                [threads.ToString(CultureInfo.InvariantCulture), shmPath, ((int)lifetime.TotalSeconds).ToString(CultureInfo.InvariantCulture)], ReadyLine(), cancel);
            target = new PauseTarget(process, memory);
            Live.Register(target);
            target.CheckReady();
            return target;
        }
        catch
        {
            if (target is not null)
            {
                target.Dispose();
            }
            else
            {
                process?.Dispose();
                memory.Dispose();
            }
            throw;
        }
    }

    /// <summary>Checks, right after the ready line, that the target's clock is ours and that it marked the shared memory ready.</summary>
    private void CheckReady()
    {
        var now = PauseSharedMemory.Now();
        var targetNow = ulong.Parse(_process.Ready.Groups[3].ValueSpan, CultureInfo.InvariantCulture);
        if (targetNow > now || now - targetNow > 5_000_000_000)
            throw new InvalidOperationException($"the target's CLOCK_MONOTONIC ({targetNow}) and Stopwatch ({now}) disagree: stalls cannot be windowed");
        if (!Memory.IsReady)
            throw new InvalidOperationException("the pause target printed its ready line but did not mark the shared memory ready");
    }

    /// <summary>Reads the first <paramref name="count"/> bytes of compute() as they are in the running target.</summary>
    public byte[] ReadCode(int count) => _process.ReadMemory(Compute, count);

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
        _process.Dispose();
        Memory.Dispose();
        Live.Unregister(this);
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
