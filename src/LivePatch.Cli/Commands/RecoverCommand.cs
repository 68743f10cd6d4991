using System.CommandLine;
using System.Globalization;
using LivePatch.Live;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch recover PID</c>: end an action a livepatch run left unfinished; and how <c>list</c> shows one.</summary>
internal static class RecoverCommand
{
    public static Command Create()
    {
        var abandon = new Option<bool>("--abandon")
        {
            Description = "Forget the action without writing any code (the record as before; a payload loaded for it kept as reverted): "
                + "for a site another tool changed, once it is put right by hand.",
        };
        var command = new Command("recover", "Finish an action a livepatch run left unfinished (it was killed or crashed): when every site already holds "
            + "its new bytes the action is completed, otherwise it is rolled back, the new sites written back to old in one stop; "
            + "the record then says so. Does nothing when no action is pending.")
        {
            abandon,
        };
        var shared = PayloadCommandOptions.AddTo(command, timeout: true, timeoutWaitsOutOf: "the sites being rewritten");
        command.SetAction(parse => LiveCommands.Run(cancellation =>
        {
            var pid = shared.Pid(parse);
            // Nothing pending: no need to seize the process (a run that starts an action meanwhile finishes it itself).
            if (LivePatcher.Interrupted(pid) is null)
            {
                Console.WriteLine(Describe(pid, new RecoverReport(null, null, [], 0, [], null, 0, TimeSpan.Zero)));
                return;
            }
            using var patcher = LivePatcher.Attach(pid, shared.ToLivePatchOptions(parse, cancellation));
            Console.WriteLine(Describe(patcher.Pid, parse.GetValue(abandon) ? patcher.AbandonInterrupted() : patcher.Recover()));
        }));
        return command;
    }

    /// <summary>What recover did, in one line (two when a payload had to be kept as reverted).</summary>
    internal static string Describe(int pid, RecoverReport report)
    {
        if (report.Action is not { } action)
            return $"process {pid} has no interrupted action: nothing to recover";
        if (report.Outcome == RecoveryOutcome.Abandoned)
            return $"process {pid}: the interrupted {action.Describe()} was abandoned: nothing written, the record says what it said before"
                + $" ({string.Join(", ", action.Sites.Select((s, i) => $"{s.Function} {report.Sites[i].ToString().ToLowerInvariant()}"))})"
                + (report.RecordedReverted is { } kept ? $"\n'{kept}' is recorded as reverted: its memory stays until livepatch unload {pid} {kept}" : "");
        var done = report.Outcome == RecoveryOutcome.Completed ? "completed" : "rolled back";
        var sites = action.Action == PendingActionKind.Unload
            ? report.Freed.Count == 0 ? "every block was still mapped" : $"{report.Freed.Count} block(s) unmapped"
            : action.Action == PendingActionKind.Load
            ? $"{report.Freed.Count} of the {action.Mapped.Count} block(s) it had mapped freed, nothing was redirected"
            : $"{report.Sites.Count(s => s == SiteState.New)} of {report.Sites.Count} sites were new"
              + (report.Sites.Any(s => s == SiteState.Torn) ? $", {report.Sites.Count(s => s == SiteState.Torn)} torn" : "")
              + (report.Written == 0 ? ", nothing written" : $", {report.Written} rewritten; {report.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(report.Pause)}");
        var line = $"recovered process {pid}: the interrupted {action.Describe()} was {done} ({sites})";
        if (action.Action is not (PendingActionKind.Unload or PendingActionKind.Load) && report.Freed.Count > 0)
            line += $"; its memory was freed ({report.Freed.Count} blocks)";
        if (report.RecordedReverted is { } name)
            line += $"\n'{name}' is recorded as reverted: its code may have run, so its memory stays until livepatch unload {pid} {name}";
        return line;
    }

    /// <summary>
    /// Prints the action a livepatch run left unfinished in <paramref name="pid"/>, if any, and what each of its sites
    /// holds: on standard output above the table, or on standard error when standard output carries JSON.
    /// </summary>
    internal static void ShowInterrupted(int pid, bool toError)
    {
        if (LivePatcher.Interrupted(pid) is not { } interrupted)
            return;
        var writer = toError ? Console.Error : Console.Out;
        var action = interrupted.Action;
        var since = action.StartedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
        writer.WriteLine(interrupted.InProgress
            ? $"process {pid}: in progress: {action.Describe()} by livepatch process {action.Livepatch} (since {since} UTC)"
            : $"process {pid}: interrupted: {action.Describe()} (livepatch process {action.Livepatch} ended before finishing it, {since} UTC); run: livepatch recover {pid}");
        for (var i = 0; i < action.Sites.Count; i++)
            writer.WriteLine($"  {action.Sites[i].Function} 0x{action.Sites[i].Address:x}: {interrupted.Sites[i].ToString().ToLowerInvariant()}");
        if (action.Action == PendingActionKind.Unload)
            writer.WriteLine($"  {interrupted.BlocksMapped} of {action.Unmaps.Count} blocks still mapped");
        if (action.Action == PendingActionKind.Load)
            writer.WriteLine($"  {action.Mapped.Count} block(s) mapped for it; recover frees them");
    }
}
