using System.CommandLine;
using LivePatch.Sites;
using LivePatch.Live;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch key PID NAME on|off</c>: every site of a static key switched in one stop.</summary>
internal static class KeyCommand
{
    public static Command Create()
    {
        var name = new Argument<string>("name") { Description = "The static key's name, as given to LP_STATIC_BRANCH." };
        var state = new Argument<string>("state") { Description = "on: every site jumps to its on path; off: every site is a NOP again." };
        state.AcceptOnlyFromAmong("on", "off");
        var command = new Command("key", "Switch a static key of a running process on or off: all its LP_STATIC_BRANCH sites in one stop.")
        {
            name, state,
        };
        var shared = SiteCommandOptions.AddToProcessCommand(command, sitesChanged: "sites to switch");
        command.SetAction(parse => LiveCommands.Run(cancellation =>
        {
            var pid = shared.Pid(parse);
            using var patcher = SitePatcher.Attach(pid, shared.ToSitePatcherOptions(parse, pid, cancellation));
            var report = patcher.SetStaticKey(parse.GetValue(name)!, parse.GetValue(state) == "on", shared.Module(parse));
            Console.WriteLine(report.Written == 0
                ? $"static key {report.Key} in {patcher.Pid} is already {(report.Enabled ? "on" : "off")} ({report.Sites} sites)"
                : $"static key {report.Key} in {patcher.Pid} is {(report.Enabled ? "on" : "off")}: {report.Written} of {report.Sites} sites written; {report.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(report.Pause)}");
        }));
        return command;
    }
}
