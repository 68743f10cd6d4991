using System.Diagnostics;

namespace LivePatch.Cli;

/// <summary>
/// For the crash-safety tests: with <c>LIVEPATCH_TEST_KILL_AT=STEP</c> in its environment, livepatch sends itself
/// SIGKILL when an action reaches that step (<c>intent-recorded</c>, <c>range-2-written</c>, <c>record-written</c>...),
/// as an operator's <c>kill -9</c> or the OOM killer would at that instant.
/// </summary>
internal static class KillAtStep
{
    public const string Variable = "LIVEPATCH_TEST_KILL_AT";

    public static Action<string>? FromEnvironment()
    {
        var step = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrEmpty(step))
            return null;
        return reached =>
        {
            if (reached != step)
                return;
            using var self = Process.GetCurrentProcess();
            self.Kill();
            // SIGKILL to oneself lands before the system call returns; nothing after it may run.
            Thread.Sleep(Timeout.Infinite);
        };
    }
}
