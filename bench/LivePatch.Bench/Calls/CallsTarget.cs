using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Bench.Common;

namespace LivePatch.Bench.Calls;

/// <summary>
/// bench/calls/target.c running behind a shell (LivePatch refuses to trace its own children), driven over its stdin and
/// stdout. Dispose asks it to quit, then kills it by PID and the shell, whatever happened before; if the harness dies
/// instead, the target reads end of input and exits by itself.
/// </summary>
internal sealed partial class CallsTarget : IDisposable
{
    private static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(60);

    private readonly ShellTarget _process;

    private CallsTarget(ShellTarget process)
    {
        _process = process;
        NativeIdentity = ulong.Parse(process.Ready.Groups[2].ValueSpan, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        Cpu = int.Parse(process.Ready.Groups[3].ValueSpan, CultureInfo.InvariantCulture);
    }

    /// <summary>The target's own PID, from its ready line (not the shell's).</summary>
    public int Pid => _process.Pid;

    /// <summary>Where native_identity is in the target, from its ready line: gives the load bias of its symbols.</summary>
    public ulong NativeIdentity { get; }

    /// <summary>The CPU the target bound itself to (the last one it may run on).</summary>
    public int Cpu { get; }

    public static CallsTarget Start(string executable, CancellationToken cancel)
    {
        var process = ShellTarget.Start("calls target", executable, ["pin"], ReadyLine(), cancel, withInput: true);
        try
        {
            return new CallsTarget(process);
        }
        catch
        {
            process.Dispose();
            throw;
        }
    }

    /// <summary>Runs one timed loop of <paramref name="iterations"/> calls in the target: nanoseconds and TSC ticks for the whole loop.</summary>
    public (ulong Nanoseconds, ulong Ticks) Run(string loop, long iterations, CancellationToken cancel)
    {
        _process.WriteLine(string.Create(CultureInfo.InvariantCulture, $"run {loop} {iterations}"));
        var line = _process.ReadLine(RunTimeout, $"result of loop {loop}", cancel);
        var match = ResultLine().Match(line);
        if (!match.Success || match.Groups[1].Value != loop)
            throw new InvalidOperationException($"unexpected answer to 'run {loop} {iterations}': {line}");
        if (ulong.Parse(match.Groups[4].Value, CultureInfo.InvariantCulture) != (ulong)iterations)
            throw new InvalidOperationException($"loop {loop} returned {match.Groups[4].Value}, not its argument {iterations}: the called function is not the identity");
        return (ulong.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture), ulong.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>Reads <paramref name="count"/> bytes of the target's memory as it holds them now.</summary>
    public byte[] ReadMemory(ulong address, int count) => _process.ReadMemory(address, count);

    public void Dispose()
    {
        _process.EndInput("quit", TimeSpan.FromSeconds(2));
        _process.Dispose();
    }

    [GeneratedRegex(@"^ready (\d+) native_identity=0x([0-9a-f]+) cpu=(\d+)$")]
    private static partial Regex ReadyLine();

    [GeneratedRegex(@"^(\w+) ns=(\d+) ticks=(\d+) x=(\d+)$")]
    private static partial Regex ResultLine();
}
