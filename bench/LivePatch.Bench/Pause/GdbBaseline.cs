using System.Diagnostics;
using System.Globalization;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Pause;

/// <summary>
/// The baseline a user would reach for: <c>gdb -p PID -batch -ex "set {unsigned char[5]}ADDR = {...}"</c>, writing
/// compute()'s current first 5 bytes back. A harmless write, but gdb still attaches and stops every thread for it.
/// </summary>
internal static class GdbBaseline
{
    public static void Require()
    {
        try
        {
            Run(["--version"], TimeSpan.FromSeconds(30));
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("gdb is not installed: the baseline needs it", e);
        }
    }

    /// <summary>Writes <paramref name="bytes"/> at <paramref name="address"/> of <paramref name="pid"/> with gdb and returns gdb's wall time.</summary>
    public static TimeSpan WriteBytes(int pid, ulong address, byte[] bytes)
    {
        var values = string.Join(',', bytes.Select(b => "0x" + b.ToString("x2", CultureInfo.InvariantCulture)));
        var started = Stopwatch.GetTimestamp();
        // -nx and no debuginfod: measure gdb itself, not the user's init file or a network lookup.
        Run([
            "-nx", "-batch", "-p", pid.ToString(CultureInfo.InvariantCulture),
            "-iex", "set debuginfod enabled off",
            "-ex", $"set {{unsigned char[{bytes.Length}]}}0x{address:x} = {{{values}}}",
        ], TimeSpan.FromSeconds(60));
        return Stopwatch.GetElapsedTime(started);
    }

    private static void Run(string[] arguments, TimeSpan timeout)
    {
        var gdb = ExternalProgram.Run("gdb", arguments, timeout);
        // gdb -batch exits 0 even when an -ex command failed on older versions: look for its error text too.
        var errors = gdb.Errors.Split('\n').Where(l => l.Contains("Cannot access memory", StringComparison.Ordinal) || l.Contains("ptrace:", StringComparison.Ordinal) || l.StartsWith("No symbol", StringComparison.Ordinal)).ToList();
        if (gdb.ExitCode != 0 || errors.Count > 0)
            throw new InvalidOperationException($"gdb exited {gdb.ExitCode}: {string.Join(" | ", errors.DefaultIfEmpty(gdb.Errors.Trim()))} {gdb.Output.Trim()}");
    }
}
