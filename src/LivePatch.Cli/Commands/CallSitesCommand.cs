using System.CommandLine;
using LivePatch.Live;
using LivePatch.Sites;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch callsites PID</c>: the call sites of a module rewritten from their slots, or restored, in one stop.</summary>
internal static class CallSitesCommand
{
    public static Command Create()
    {
        var restore = new Option<bool>("--restore") { Description = "Put the indirect call back in every call site instead." };
        var backend = new Option<string>("--backend")
        {
            Description = "native: built-in patchlets where the slot holds their function, else direct; direct: direct calls, NOPs, ud2 only.",
            DefaultValueFactory = _ => "native",
        };
        backend.AcceptOnlyFromAmong("native", "direct");
        var command = new Command("callsites", "Rewrite the LP_CALLSITE sites of a running process from the functions their ops slots hold now (inline patchlet, direct call, NOPs, ud2), all in one stop; or restore their indirect calls.")
        {
            restore, backend,
        };
        var shared = SiteCommandOptions.AddToProcessCommand(command, sitesChanged: "call sites to rewrite");
        command.SetAction(parse => LiveCommands.Run(cancellation =>
        {
            var pid = shared.Pid(parse);
            using var patcher = SitePatcher.Attach(pid, shared.ToSitePatcherOptions(parse, pid, cancellation));
            var restoring = parse.GetValue(restore);
            var report = restoring
                ? patcher.RestoreCallSites(shared.Module(parse))
                : patcher.ApplyCallSites(parse.GetValue(backend) == "direct" ? CallSiteBackend.Direct : CallSiteBackend.Default, shared.Module(parse));
            var what = restoring ? "indirect calls restored" : $"{report.Changed} of {report.Sites} rewritten";
            Console.WriteLine(report.Written == 0
                ? $"call sites of {report.Module} in {patcher.Pid}: {what} already ({report.Sites} sites)"
                : $"call sites of {report.Module} in {patcher.Pid}: {what}, {report.Written} written; {report.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(report.Pause)}{LiveCommands.Attempts(report.Attempts)}");
            if (!restoring)
                foreach (var choice in report.Choices)
                    Console.WriteLine($"  {choice.Name}: {choice.Reason}");
        }));
        return command;
    }
}
