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
}
