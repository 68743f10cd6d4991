using System.Diagnostics;

namespace LivePatch.Tests.Fixtures;

/// <summary>The livepatch command built next to the tests, run as a separate process as an operator runs it.</summary>
internal static class LivepatchCli
{
    public sealed record Result(int ExitCode, string Output, string Error);

    /// <summary>Runs livepatch to its end (at most a minute) and returns its status and output.</summary>
    public static Result Run(params string[] arguments) => RunWith(new Dictionary<string, string>(), arguments);

    /// <summary>Runs livepatch with <paramref name="environment"/> added to its environment.</summary>
    public static Result RunWith(IReadOnlyDictionary<string, string> environment, params string[] arguments)
    {
        using var process = Start(environment, arguments);
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"livepatch {string.Join(' ', arguments)} did not finish within a minute");
        }
        return new Result(process.ExitCode, output, error.Result);
    }

    /// <summary>Starts livepatch with its standard output and error redirected; the caller ends it.</summary>
    public static Process Start(params string[] arguments) => Start(new Dictionary<string, string>(), arguments);

    /// <summary>Starts livepatch with <paramref name="environment"/> added to its environment; the caller ends it.</summary>
    public static Process Start(IReadOnlyDictionary<string, string> environment, params string[] arguments)
    {
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "livepatch"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        return Process.Start(start) ?? throw new InvalidOperationException("could not start livepatch");
    }

    /// <summary>
    /// Starts livepatch in the background with its standard error collected, and returns once it traces
    /// <paramref name="targetPid"/> (a loaded machine may take seconds to start it) and <paramref name="settle"/> more
    /// has passed. The caller ends it.
    /// </summary>
    public static Background StartHolding(int targetPid, TimeSpan settle, params string[] arguments)
    {
        var background = new Background(Start(arguments));
        var attached = Stopwatch.StartNew();
        while (RunningTarget.TracerProcess(targetPid) == 0 && attached.Elapsed < TimeSpan.FromSeconds(8))
            Thread.Sleep(10);
        Thread.Sleep(settle);
        return background;
    }

    /// <summary>A livepatch process started by <see cref="StartHolding"/>: the process and what it wrote to standard error.</summary>
    public sealed class Background : IDisposable
    {
        private readonly System.Text.StringBuilder _error = new();

        internal Background(Process process)
        {
            Process = process;
            process.ErrorDataReceived += (_, e) =>
            {
                lock (_error)
                    _error.AppendLine(e.Data);
            };
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        /// <summary>Standard error so far (after the process exited and <c>WaitForExit()</c> returned: all of it).</summary>
        public string Error
        {
            get
            {
                lock (_error)
                    return _error.ToString();
            }
        }

        public void Dispose()
        {
            if (!Process.HasExited)
                Process.Kill();
            Process.Dispose();
        }
    }
}
