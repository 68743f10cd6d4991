using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LivePatch.Bench.Common;

/// <summary>
/// A compiled C target started behind <c>/bin/sh</c> (LivePatch refuses to trace its own children, so the target is
/// the shell's child, not ours) and known by the PID its ready line gives. Dispose kills the target by that PID and
/// then the shell, whatever happened before.
/// </summary>
internal sealed class ShellTarget : IDisposable
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(10);

    private readonly Process _shell;
    private readonly Task<string> _stderr;
    private bool _inputEnded;
    private bool _disposed;

    private ShellTarget(Process shell, string name)
    {
        _shell = shell;
        _stderr = shell.StandardError.ReadToEndAsync();
        Name = name;
    }

    /// <summary>What the target is, for messages: "pause target".</summary>
    public string Name { get; }

    /// <summary>The target's own PID, from its ready line (not the shell's).</summary>
    public int Pid { get; private set; }

    /// <summary>The target's ready line, matched: group 1 is its PID, the others are the target's to define.</summary>
    public Match Ready { get; private set; } = Match.Empty;

    /// <summary>
    /// Starts <paramref name="executable"/> with <paramref name="arguments"/> behind a shell and waits for its first line,
    /// which must match <paramref name="readyLine"/>. With <paramref name="withInput"/> the target reads lines from us.
    /// </summary>
    public static ShellTarget Start(string name, string executable, IEnumerable<string> arguments, Regex readyLine, CancellationToken cancel, bool withInput = false)
    {
        var start = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardInput = withInput,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // "; exit $?" keeps the shell from exec'ing the target in its place.
        foreach (var argument in new[] { "-c", "\"$0\" \"$@\"; exit $?", executable }.Concat(arguments))
            start.ArgumentList.Add(argument);
        var target = new ShellTarget(Process.Start(start) ?? throw new InvalidOperationException("could not start /bin/sh"), name);
        try
        {
            var line = target.ReadLine(ReadyTimeout, "ready line", cancel);
            var match = readyLine.Match(line);
            if (!match.Success)
                throw new InvalidOperationException($"unexpected first line from the {name}: {line}");
            target.Pid = int.Parse(match.Groups[1].ValueSpan, CultureInfo.InvariantCulture);
            target.Ready = match;
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>Sends one line to the target's input.</summary>
    public void WriteLine(string line)
    {
        _shell.StandardInput.WriteLine(line);
        _shell.StandardInput.Flush();
    }

    /// <summary>The target's next line of output; throws if none comes within <paramref name="timeout"/> or the target exits.</summary>
    public string ReadLine(TimeSpan timeout, string what, CancellationToken cancel)
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
            throw new TimeoutException($"no {what} from the {Name} within {timeout.TotalSeconds:0} s");
        }
        if (line is not null)
            return line;
        var errors = Errors();
        // Ctrl-C from a terminal reaches the whole process group, the target included: report the cancellation, not its death.
        cancel.ThrowIfCancellationRequested();
        throw new InvalidOperationException($"the {Name} exited instead of sending its {what}: {errors}");
    }

    /// <summary>Reads <paramref name="count"/> bytes of the target's memory as it holds them now.</summary>
    public byte[] ReadMemory(ulong address, int count)
    {
        var bytes = new byte[count];
        using var handle = File.OpenHandle($"/proc/{Pid}/mem");
        if (RandomAccess.Read(handle, bytes, (long)address) != count)
            throw new InvalidOperationException($"short read of {count} bytes at 0x{address:x} in the {Name} ({Pid})");
        return bytes;
    }

    /// <summary>Sends <paramref name="lastLine"/>, closes the target's input and gives it <paramref name="grace"/> to exit by itself.</summary>
    public void EndInput(string lastLine, TimeSpan grace)
    {
        if (_inputEnded || _disposed)
            return;
        _inputEnded = true;
        try
        {
            _shell.StandardInput.WriteLine(lastLine);
            _shell.StandardInput.Close();
        }
        catch (IOException)
        {
            // the pipe is gone: the target has exited already
        }
        _shell.WaitForExit(grace);
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
        // While the shell runs, it has not reaped its child, so the PID still names the target.
        if (Pid > 0 && !_shell.HasExited)
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
}
