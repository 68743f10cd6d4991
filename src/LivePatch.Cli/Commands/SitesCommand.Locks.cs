using LivePatch.Sites;

namespace LivePatch.Cli.Commands;

internal static partial class SitesCommand
{
    // livepatch sites PID --up | --smp
    private static void SwitchLockPrefixes(int pid, bool up, SitePatcherOptions options)
    {
        using var patcher = SitePatcher.Attach(pid, options);
        if (!up)
        {
            var restored = patcher.RestoreLockPrefixes();
            Console.WriteLine(restored.Written == 0
                ? $"process {pid}: all {restored.Sites} lock prefixes are in place"
                : $"process {pid}: {restored.Written} of {restored.Sites} lock prefixes put back; {restored.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(restored.Pause)}");
            return;
        }
        var dropped = patcher.DropLockPrefixes();
        if (dropped.Sites == 0)
        {
            Console.WriteLine($"process {pid} has no lock-prefix sites");
            return;
        }
        Console.WriteLine($"process {pid}: {dropped.Written} of {dropped.Sites} lock prefixes dropped ({dropped.Reason}); {dropped.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(dropped.Pause)}");
        if (!dropped.Watching)
            return;
        Console.WriteLine($"watching process {pid}: its next thread gets them back before it runs (Ctrl-C puts them back and exits)");
        Console.WriteLine(patcher.WatchLockPrefixes(options.Cancellation).Reason);
    }
}
