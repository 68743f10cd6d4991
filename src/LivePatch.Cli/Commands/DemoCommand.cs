using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LivePatch.Live;

namespace LivePatch.Cli.Commands;

/// <summary>
/// <c>livepatch demo</c>: builds the example target and its fix with gcc, starts the target, applies the fix while its
/// threads run, lists, reverts, and shows the output change each way, then stops the target.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var threads = new Option<int>("--threads") { Description = "Worker threads in the demo target.", DefaultValueFactory = _ => 4 };
        var command = new Command("demo", "Build the example target and payload (gcc), live-patch the running target, revert, and show what changed.")
        {
            threads,
        };
        command.SetAction(parse => LiveCommands.Run(cancellation => Run(Math.Clamp(parse.GetValue(threads), 1, 256), cancellation)));
        return command;
    }

    private static void Run(int threads, CancellationToken cancellation)
    {
        var directory = Directory.CreateTempSubdirectory("livepatch-demo-").FullName;
        try
        {
            var target = Extract(directory, "target.c");
            var fix = Extract(directory, "fix.c");
            Extract(directory, "include/livepatch/livepatch.h");
            Step("build", $"gcc -O2 -pthread target.c -o target && gcc -c -O2 -fPIC -ffunction-sections -I include fix.c -o fix.o   (in {directory})");
            Gcc(directory, "-O2", "-g", "-pthread", target, "-o", "target");
            Gcc(directory, "-c", "-O2", "-fPIC", "-ffunction-sections", "-I", "include", fix, "-o", "fix.o");

            using var running = DemoTarget.Start(Path.Combine(directory, "target"), threads);
            Step("run", $"target started as process {running.Pid} with {threads} worker threads (stop timeout {DemoTimeout.TotalMilliseconds:0} ms)");
            running.Show(2);

            // The demo's busy threads share this machine's CPUs: allow them time to reach their stop.
            using (var patcher = LivePatcher.Attach(running.Pid, new LivePatchOptions { Timeout = DemoTimeout, Cancellation = cancellation }))
            {
                var applied = patcher.Apply(Path.Combine(directory, "fix.o"));
                Step("apply", $"livepatch apply {running.Pid} fix.o -> {string.Join(", ", applied.Functions.Select(f => $"{f.Name} -> {f.NewSymbol}"))}; {applied.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(applied.Pause)}");
                running.Show(2);

                Step("list", $"livepatch list {running.Pid}");
                LiveCommands.Print(patcher.List());

                var reverted = patcher.Revert("fix");
                Step("revert", $"livepatch revert {running.Pid} fix; {reverted.ThreadsStopped} threads stopped, pause {LiveCommands.Micro(reverted.Pause)}");
                running.Show(2);

                Console.WriteLine();
                Console.WriteLine($"pause: apply {LiveCommands.Micro(applied.Pause)}, revert {LiveCommands.Micro(reverted.Pause)} with {applied.ThreadsStopped} threads; the target never stopped serving.");
            }
        }
        finally
        {
            try
            {
                Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static readonly TimeSpan DemoTimeout = TimeSpan.FromMilliseconds(500);

    private static void Step(string name, string text) => Console.WriteLine($"== {name}: {text}");

    private static string Extract(string directory, string name)
    {
        var path = Path.Combine(directory, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var resource = typeof(DemoCommand).Assembly.GetManifestResourceStream("demo/" + name)
            ?? throw new InvalidOperationException($"the demo source {name} is not embedded in livepatch");
        using var file = File.Create(path);
        resource.CopyTo(file);
        return path;
    }

    private static void Gcc(string directory, params string[] arguments)
    {
        var start = new ProcessStartInfo("gcc") { WorkingDirectory = directory, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
            start.ArgumentList.Add(argument);
        Process gcc;
        try
        {
            gcc = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new InvalidOperationException("the demo needs gcc: apt-get install gcc");
        }
        using (gcc)
        {
            var errors = gcc.StandardError.ReadToEnd();
            gcc.WaitForExit();
            if (gcc.ExitCode != 0)
                throw new InvalidOperationException($"gcc {string.Join(' ', arguments)} failed: {errors}");
        }
    }

    /// <summary>
    /// The demo target, started through a shell so that it is not a child of livepatch (the runtime reaps its own
    /// children and would swallow their ptrace stops); killed on every path.
    /// </summary>
    private sealed class DemoTarget : IDisposable
    {
        private readonly Process _shell;
        private readonly System.Collections.Concurrent.BlockingCollection<string> _lines = [];

        private DemoTarget(Process shell)
        {
            _shell = shell;
            _shell.OutputDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                    _lines.Add(e.Data);
            };
            _shell.BeginOutputReadLine();
            _shell.BeginErrorReadLine(); // the shell's "Killed" when the demo ends
        }

        public int Pid { get; private set; }

        public static DemoTarget Start(string executable, int threads)
        {
            var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var argument in new[] { "-c", "\"$0\" \"$@\"; exit $?", executable, threads.ToString(CultureInfo.InvariantCulture) })
                start.ArgumentList.Add(argument);
            var target = new DemoTarget(Process.Start(start)!);
            if (!target._lines.TryTake(out var ready, TimeSpan.FromSeconds(10)) || !ready.StartsWith("ready ", StringComparison.Ordinal))
            {
                target.Dispose();
                throw new InvalidOperationException($"the demo target did not start: '{ready}'");
            }
            target.Pid = int.Parse(ready[6..], CultureInfo.InvariantCulture);
            return target;
        }

        /// <summary>
        /// Shows the next lines the target prints, passing over those it printed before now: those already read, and
        /// the next one, which may have been on its way through the pipe (or computed by workers not yet scheduled)
        /// when the change was made.
        /// </summary>
        public void Show(int lines)
        {
            while (_lines.TryTake(out _))
            {
            }
            _lines.TryTake(out _, TimeSpan.FromSeconds(5));
            for (var i = 0; i < lines; i++)
                Console.WriteLine(_lines.TryTake(out var line, TimeSpan.FromSeconds(5)) ? $"   target: {line}" : "   target: (no output)");
        }

        public void Dispose()
        {
            try
            {
                if (Pid > 0)
                    Process.GetProcessById(Pid).Kill();
            }
            catch (Exception error) when (error is ArgumentException or InvalidOperationException)
            {
            }
            _shell.Kill(entireProcessTree: true);
            _shell.WaitForExit(5000);
            _shell.Dispose();
            _lines.Dispose();
        }
    }
}
