using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LivePatch.Bench.Calls;

/// <summary>
/// bench/calls/target.c running behind a shell (LivePatch refuses to trace its own children), driven over its stdin and
/// stdout. Dispose asks it to quit, then kills it by PID and the shell, whatever happened before; if the harness dies
/// instead, the target reads end of input and exits by itself.
/// </summary>
internal sealed partial class CallsTarget : IDisposable
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(60);

    private readonly Process _shell;
    private readonly Task<string> _stderr;
    private bool _disposed;

    private CallsTarget(Process shell)
    {
        _shell = shell;
        _stderr = shell.StandardError.ReadToEndAsync();
    }

    /// <summary>The target's own PID, from its ready line (not the shell's).</summary>
    public int Pid { get; private set; }

    /// <summary>Where native_identity is in the target, from its ready line: gives the load bias of its symbols.</summary>
    public ulong NativeIdentity { get; private set; }

    /// <summary>The CPU the target bound itself to (the last one it may run on).</summary>
    public int Cpu { get; private set; }

    public static CallsTarget Start(string executable, CancellationToken cancel)
    {
        var start = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "-c", "\"$0\" \"$@\"; exit $?", executable, "pin" })
            start.ArgumentList.Add(argument);
        var shell = Process.Start(start) ?? throw new InvalidOperationException("could not start /bin/sh");
        var target = new CallsTarget(shell);
        try
        {
            var line = target.ReadLine(ReadyTimeout, "a ready line", cancel);
            var match = ReadyLine().Match(line);
            if (!match.Success)
                throw new InvalidOperationException($"unexpected first line from the calls target: {line}");
            target.Pid = int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            target.NativeIdentity = ulong.Parse(match.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            target.Cpu = int.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture);
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>Runs one timed loop of <paramref name="iterations"/> calls in the target: nanoseconds and TSC ticks for the whole loop.</summary>
    public (ulong Nanoseconds, ulong Ticks) Run(string loop, long iterations, CancellationToken cancel)
    {
        _shell.StandardInput.WriteLine(string.Create(CultureInfo.InvariantCulture, $"run {loop} {iterations}"));
        _shell.StandardInput.Flush();
        var line = ReadLine(RunTimeout, $"the result of loop {loop}", cancel);
        var match = ResultLine().Match(line);
        if (!match.Success || match.Groups[1].Value != loop)
            throw new InvalidOperationException($"unexpected answer to 'run {loop} {iterations}': {line}");
        if (ulong.Parse(match.Groups[4].Value, CultureInfo.InvariantCulture) != (ulong)iterations)
            throw new InvalidOperationException($"loop {loop} returned {match.Groups[4].Value}, not its argument {iterations}: the called function is not the identity");
        return (ulong.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture), ulong.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>Reads <paramref name="count"/> bytes of the target's memory as it holds them now.</summary>
    public byte[] ReadMemory(ulong address, int count)
    {
        var bytes = new byte[count];
        using var handle = File.OpenHandle($"/proc/{Pid}/mem");
        if (RandomAccess.Read(handle, bytes, (long)address) != count)
            throw new InvalidOperationException($"short read of {count} bytes at 0x{address:x} in process {Pid}");
        return bytes;
    }

    private string ReadLine(TimeSpan timeout, string what, CancellationToken cancel)
    {
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        limit.CancelAfter(timeout);
        string? line;
        try
        {
            line = _shell.StandardOutput.ReadLineAsync(limit.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw new TimeoutException($"the calls target sent no {what} within {timeout.TotalSeconds:0} s");
        }
        if (line is not null)
            return line;
        var errors = Errors();
        // Ctrl-C from a terminal reaches the whole process group, the target included: report the cancellation, not its death.
        cancel.ThrowIfCancellationRequested();
        throw new InvalidOperationException($"the calls target exited instead of sending {what}: {errors}");
    }

    private string Errors()
    {
        if (!_shell.WaitForExit(2_000))
            return "(still running)";
        return _stderr.Wait(TimeSpan.FromSeconds(2)) && _stderr.Result.Length > 0 ? _stderr.Result.Trim() : $"exit status {_shell.ExitCode}";
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        try
        {
            _shell.StandardInput.WriteLine("quit");
            _shell.StandardInput.Close();
        }
        catch (IOException)
        {
            // the pipe is gone: the target has exited already
        }
        // While the shell runs, its child (the target) is not reaped, so its PID still names it.
        if (Pid > 0 && !_shell.WaitForExit(2_000))
            KillByPid(Pid);
        try
        {
            if (!_shell.HasExited)
                _shell.Kill(entireProcessTree: true);
            _shell.WaitForExit(5_000);
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
        _shell.Dispose();
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

    [GeneratedRegex(@"^ready (\d+) native_identity=0x([0-9a-f]+) cpu=(\d+)$")]
    private static partial Regex ReadyLine();

    [GeneratedRegex(@"^(\w+) ns=(\d+) ticks=(\d+) x=(\d+)$")]
    private static partial Regex ResultLine();
}
