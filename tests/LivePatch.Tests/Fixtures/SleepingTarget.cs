using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Fixtures;

/// <summary>
/// tests/fixtures/targets/sleeping.c running: its sleeper thread waits in sleep_inside() or wait_outside() until the
/// test creates the trigger file, each in turn. Dispose kills it.
/// </summary>
internal sealed partial class SleepingTarget : IDisposable
{
    private SleepingTarget(RunningTarget process, string trigger)
    {
        Process = process;
        TriggerPath = trigger;
        Sleeper = int.Parse(SleeperPattern().Match(process.Ready).Groups[1].Value, CultureInfo.InvariantCulture);
    }

    public RunningTarget Process { get; }

    public int Pid => Process.Pid;

    /// <summary>The sleeper thread's id.</summary>
    public int Sleeper { get; }

    public string TriggerPath { get; }

    public static SleepingTarget Start()
    {
        var trigger = Path.Combine(ExternalTool.ScratchDirectory("sleeping"), "leave");
        return new SleepingTarget(RunningTarget.Start("targets/sleeping.c", "-O2 -g -pthread", trigger), trigger);
    }

    /// <summary>Waits until the sleeper has begun round <paramref name="round"/> and waits in nanosleep inside sleep_inside() (or its replacement).</summary>
    public void WaitUntilInside(int round)
    {
        Process.WaitForLine(l => l == $"inside={round}", TimeSpan.FromSeconds(10));
        WaitUntilSleeping();
    }

    /// <summary>Lets the sleeper leave the function it waits in; returns what sleep_inside() returned when that was it.</summary>
    public int LeaveInside(int round)
    {
        Trigger();
        var line = Process.WaitForLine(l => l.StartsWith($"outside={round} ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
        WaitUntilSleeping();
        return int.Parse(line[(line.IndexOf("left=", StringComparison.Ordinal) + 5)..], CultureInfo.InvariantCulture);
    }

    /// <summary>Lets the sleeper leave wait_outside() and waits until it sleeps inside again, in round <paramref name="round"/>.</summary>
    public void LeaveOutside(int round)
    {
        Trigger();
        WaitUntilInside(round);
    }

    /// <summary>Creates the trigger file: the function the sleeper waits in returns within a millisecond or so.</summary>
    public void Trigger() => File.WriteAllText(TriggerPath, "");

    public void Dispose() => Process.Dispose();

    // /proc/PID/task/TID/syscall begins with the number of the system call the thread is blocked in.
    private void WaitUntilSleeping()
    {
        for (var attempt = 0; attempt < 500; attempt++)
        {
            var number = File.ReadAllText($"/proc/{Pid}/task/{Sleeper}/syscall").Split(' ')[0];
            if (number is "230" or "35") // clock_nanosleep, nanosleep
                return;
            Thread.Sleep(10);
        }
        throw new Xunit.Sdk.XunitException($"thread {Sleeper} of process {Pid} is not sleeping");
    }

    [GeneratedRegex(@"\bsleeper=(\d+)")]
    private static partial Regex SleeperPattern();
}
