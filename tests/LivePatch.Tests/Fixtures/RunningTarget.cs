using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LivePatch.Tests.Fixtures;

/// <summary>
/// A fixture program compiled by gcc and running as a child of the test: its output lines are collected,
/// and Dispose kills it, whatever the test did, so nothing is left running or stopped.
/// </summary>
internal sealed partial class RunningTarget : IDisposable
{
    private readonly Process _process;
    private readonly BlockingCollection<string> _lines = [];
    private readonly List<string> _all = [];

    private RunningTarget(Process process, bool isChild)
    {
        _process = process;
        IsChild = isChild;
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
                return;
            lock (_all)
                _all.Add(e.Data);
            _lines.Add(e.Data);
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        Ready = WaitForLine(l => l.StartsWith("ready ", StringComparison.Ordinal), TimeSpan.FromSeconds(20));
        Pid = int.Parse(Ready.Split(' ')[1], CultureInfo.InvariantCulture);
        if (!IsChild)
            Live.TryAdd(Pid, 0);
    }

    // Targets still running, killed when the test host exits normally even if a test forgot one.
    private static readonly ConcurrentDictionary<int, byte> Live = CreateRegistry();

    private static ConcurrentDictionary<int, byte> CreateRegistry()
    {
        var live = new ConcurrentDictionary<int, byte>();
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var pid in live.Keys)
                KillByPid(pid);
        };
        return live;
    }

    /// <summary>The program's PID, as it printed it on its ready line.</summary>
    public int Pid { get; }

    /// <summary>True when the program is a child of the test process; by default a shell stands between them.</summary>
    public bool IsChild { get; }

    /// <summary>The program's first line, <c>ready PID name=ADDR ...</c>.</summary>
    public string Ready { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>An address the program printed on its ready line, e.g. <c>ReadyAddress("compute")</c>.</summary>
    public ulong ReadyAddress(string name)
    {
        var match = Regex.Match(Ready, $@"\b{Regex.Escape(name)}=0x([0-9a-f]+)");
        Assert.True(match.Success, $"'{name}' is not on the ready line: {Ready}");
        return ulong.Parse(match.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    /// <summary>Compiles <paramref name="source"/> (under tests/fixtures) once per flag set and starts it.</summary>
    public static RunningTarget Start(string source, string flags, params string[] arguments)
    {
        var executable = Build(source, flags);
        return StartExecutable(executable, arguments);
    }

    public static string Build(string source, string flags)
    {
        var name = Path.GetFileNameWithoutExtension(source) + "-" + Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(flags)))[..8];
        var output = Path.Combine(Gcc.OutputDirectory, "targets", name);
        lock (BuildLock)
        {
            if (!File.Exists(output))
                Gcc.Compile(source, flags, output);
        }
        return output;
    }

    /// <summary>
    /// Starts <paramref name="executable"/>. By default through a shell that waits for it, as an operator's
    /// process would be: not a child of ours, so the runtime's own SIGCHLD handling never waits for it.
    /// </summary>
    public static RunningTarget StartExecutable(string executable, params string[] arguments) => StartExecutable(executable, asChild: false, arguments);

    public static RunningTarget StartExecutable(string executable, bool asChild, params string[] arguments)
    {
        var start = new ProcessStartInfo(asChild ? executable : "/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (!asChild)
        {
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add("\"$0\" \"$@\"; exit $?");
            start.ArgumentList.Add(executable);
        }
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {executable}");
        try
        {
            return new RunningTarget(process, asChild);
        }
        catch
        {
            Kill(process);
            throw;
        }
    }

    /// <summary>Waits for a line the program prints from now on that satisfies <paramref name="predicate"/>.</summary>
    public string WaitForLine(Func<string, bool> predicate, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !_lines.TryTake(out var line, left))
                throw new TimeoutException($"target {_process.Id} printed no matching line in {timeout.TotalSeconds} s; last lines: {string.Join(" | ", LastLines(5))}");
            if (predicate(line))
                return line;
        }
    }

    /// <summary>
    /// Returns the value of <paramref name="key"/> (e.g. <c>compute=3</c>) on a line printed after this call began:
    /// lines already queued, and the one that may have been printed meanwhile, are passed over.
    /// </summary>
    public long NextValue(string key)
    {
        var pattern = new Regex($@"\b{Regex.Escape(key)}=(-?\d+)");
        while (_lines.TryTake(out _))
        {
        }
        WaitForLine(l => pattern.IsMatch(l), TimeSpan.FromSeconds(10));
        var line = WaitForLine(l => pattern.IsMatch(l), TimeSpan.FromSeconds(10));
        return long.Parse(pattern.Match(line).Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Asserts that <paramref name="key"/> reaches <paramref name="expected"/> within a few seconds and keeps it on the
    /// next lines: lines printed before a change can still be on their way when the change is made.
    /// </summary>
    public void AssertValueBecomes(string key, long expected)
    {
        var pattern = new Regex($@"\b{Regex.Escape(key)}=(-?\d+)");
        long Value(string line) => long.Parse(pattern.Match(line).Groups[1].Value, CultureInfo.InvariantCulture);
        try
        {
            WaitForLine(l => pattern.IsMatch(l) && Value(l) == expected, TimeSpan.FromSeconds(5));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"{key} never became {expected}; last lines: {string.Join(" | ", LastLines(3))}");
        }
        for (var i = 0; i < 3; i++)
        {
            var line = WaitForLine(l => pattern.IsMatch(l), TimeSpan.FromSeconds(5));
            Assert.True(Value(line) == expected, $"{key} went back from {expected} to {Value(line)}: {line}");
        }
    }

    /// <summary>The process tracing <paramref name="pid"/> (the Tgid of its TracerPid thread), or 0 when none does.</summary>
    public static int TracerProcess(int pid)
    {
        static int Field(string status, string name) => int.Parse(
            File.ReadLines(status).First(l => l.StartsWith(name, StringComparison.Ordinal))[name.Length..].Trim(), CultureInfo.InvariantCulture);
        var tracer = Field($"/proc/{pid}/status", "TracerPid:");
        return tracer == 0 ? 0 : Field($"/proc/{tracer}/status", "Tgid:");
    }

    /// <summary>The ids of the program's threads other than its main thread.</summary>
    public IReadOnlyList<int> OtherThreads() =>
        [.. Directory.GetDirectories($"/proc/{Pid}/task").Select(d => int.Parse(Path.GetFileName(d), CultureInfo.InvariantCulture)).Where(t => t != Pid)];

    /// <summary>Each thread's state letter from <c>/proc/PID/task/TID/stat</c> (<c>R</c>, <c>S</c>, <c>t</c> for a tracing stop...).</summary>
    public IReadOnlyDictionary<int, string> ThreadStates()
    {
        var states = new Dictionary<int, string>();
        foreach (var directory in Directory.GetDirectories($"/proc/{Pid}/task"))
        {
            try
            {
                // "tid (comm) S ...": the state follows the last ')'.
                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                states[int.Parse(Path.GetFileName(directory), CultureInfo.InvariantCulture)] = stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                // The thread exited since the directory was listed.
            }
        }
        return states;
    }

    public IReadOnlyList<string> LastLines(int count)
    {
        lock (_all)
            return _all.TakeLast(count).ToList();
    }

    /// <summary>How many lines the program printed so far: a mark for <see cref="LinesSince"/>.</summary>
    public int LineCount
    {
        get
        {
            lock (_all)
                return _all.Count;
        }
    }

    /// <summary>The lines printed after the first <paramref name="mark"/> ones (<see cref="LineCount"/>).</summary>
    public IReadOnlyList<string> LinesSince(int mark)
    {
        lock (_all)
            return _all.Skip(mark).ToList();
    }

    public void Dispose()
    {
        // A target behind the shell is not ours to reap: kill it by PID. A direct child the runtime kills and reaps.
        if (Pid > 0 && !IsChild)
            KillByPid(Pid);
        Live.TryRemove(Pid, out _);
        Kill(_process);
        _process.Dispose();
        _lines.Dispose();
    }

    private static void KillByPid(int pid)
    {
        if (!Directory.Exists($"/proc/{pid}"))
            return;
        try
        {
            ExternalTool.Run("kill", "-9", pid.ToString(CultureInfo.InvariantCulture));
        }
        catch (InvalidOperationException)
        {
            // it exited in the meantime
        }
    }

    private static void Kill(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
    }

    private static readonly Lock BuildLock = new();
}
