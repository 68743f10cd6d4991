using System.Diagnostics;

namespace LivePatch.Bench.Common;

/// <summary>What a finished program wrote and how it exited.</summary>
internal readonly record struct ProgramOutput(int ExitCode, string Output, string Errors);

/// <summary>A tool the benchmarks run to its end (gcc, gdb): no input, both outputs read, killed if it overruns.</summary>
internal static class ExternalProgram
{
    /// <summary>
    /// Runs <paramref name="program"/> with <paramref name="arguments"/> and waits for it; a missing program throws
    /// <see cref="System.ComponentModel.Win32Exception"/>, one that overruns <paramref name="timeout"/> is killed and throws <see cref="TimeoutException"/>.
    /// </summary>
    public static ProgramOutput Run(string program, IEnumerable<string> arguments, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(5_000);
            throw new TimeoutException($"{program} {string.Join(' ', start.ArgumentList)} did not finish in {timeout.TotalSeconds} s");
        }
        // The timed wait can return before the outputs are drained; this one waits for them too.
        process.WaitForExit();
        return new ProgramOutput(process.ExitCode, output.Result, errors.Result);
    }

    /// <summary>The first line <c>PROGRAM --version</c> prints, or "not installed".</summary>
    public static string Version(string program)
    {
        try
        {
            var version = Run(program, ["--version"], TimeSpan.FromSeconds(30));
            return version.Output.Split('\n', 2)[0].Trim() is { Length: > 0 } line ? line : "unknown";
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return "not installed";
        }
    }
}
