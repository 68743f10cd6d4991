using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using LivePatch.Targets.Native;

namespace LivePatch.Targets;

internal sealed partial class PtraceSession
{
    // The program runs as a grandchild: the runtime reaps its own children with waitpid and would consume ptrace
    // stops of a child. The inner shell stops itself before exec, so the tracer can seize it with no race; the
    // outer one waits for it in the foreground (so the program keeps the terminal, stdin and default signals) and
    // exits with its status.
    private const string LaunchScript = "sh -c 'kill -STOP $$; exec \"$0\" \"$@\"' \"$@\"; exit $?";

    private const int AuxEntry = 9; // AT_ENTRY
    private const byte Int3 = 0xcc;

    /// <summary>
    /// Starts <paramref name="program"/> and returns a session holding it at its entry point: the dynamic loader has
    /// mapped its libraries and run their initialisers, none of the program's own code has run. The session is
    /// held (<see cref="IsHeld"/>): actions stop nothing new and resume nothing until <see cref="Release"/> or
    /// Dispose. <paramref name="shell"/> is the process whose exit status is the program's.
    /// </summary>
    /// <exception cref="TargetException">The program could not be started or ended before its entry point.</exception>
    public static PtraceSession Launch(string program, IReadOnlyList<string> arguments, bool redirectOutput, out Process shell)
    {
        var start = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            RedirectStandardOutput = redirectOutput,
            RedirectStandardError = redirectOutput,
        };
        foreach (var argument in (string[])["-c", LaunchScript, "livepatch-run", program, .. arguments])
            start.ArgumentList.Add(argument);
        shell = Process.Start(start) ?? throw new TargetException(TargetError.SystemCallFailed, 0, "could not start /bin/sh to launch the program");
        var launcher = shell;
        var pid = 0;
        PtraceSession? session = null;
        try
        {
            pid = WaitForSelfStoppedChild(launcher, program);
            session = new PtraceSession(pid);
            session._tracer.Invoke(() =>
            {
                session._options = Libc.PtraceOptionTraceExec;
                session.Seize(pid, isFirst: true);
                session.RunToEntry(program);
                return 0;
            });
            return session;
        }
        catch
        {
            // The program's own code never ran: end it rather than leave it stopped or half started.
            if (pid > 0)
                Libc.Kill(pid, Libc.Sigkill);
            session?.Dispose();
            try
            {
                if (!launcher.WaitForExit(5000))
                    launcher.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
            throw;
        }
    }

    // The inner shell, stopped by its own SIGSTOP.
    private static int WaitForSelfStoppedChild(Process shell, string program)
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 10;
        while (true)
        {
            if (shell.HasExited)
                throw new TargetException(TargetError.Exited, shell.Id, $"could not start {program}: the launching shell exited with status {shell.ExitCode}");
            string children;
            try
            {
                children = File.ReadAllText($"/proc/{shell.Id}/task/{shell.Id}/children").Trim();
            }
            catch (IOException)
            {
                children = "";
            }
            if (children.Length > 0 && int.TryParse(children.Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture, out var child)
                && StateOf(child) == 'T')
                return child;
            if (Stopwatch.GetTimestamp() > deadline)
                throw new TargetException(TargetError.Timeout, shell.Id, $"could not start {program}: the launching shell did not get ready within 10 s");
            Thread.Sleep(1);
        }
    }

    private static char StateOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2];
        }
        catch (IOException)
        {
            return '?';
        }
    }

    /// <summary>Lets the seized, self-stopped shell exec the program and runs it to its entry point.</summary>
    private void RunToEntry(string program)
    {
        var thread = _threads[Pid];
        var continued = false;
        while (true)
        {
            var status = WaitBlocking(thread, program, "before it started");
            var signal = (status >> 8) & 0xff;
            var ptraceEvent = status >> 16;
            if (ptraceEvent == Libc.PtraceEventExec)
                break;
            if (ptraceEvent == Libc.PtraceEventStop && !continued)
            {
                // The shell's own SIGSTOP, reported once seized: end the job-control stop and let it exec.
                Libc.Kill(Pid, Libc.Sigcont);
                continued = true;
            }
            var deliver = ptraceEvent == 0 && signal is not (Libc.Sigcont or Libc.Sigstop) ? signal : 0;
            Cont(thread, deliver);
        }

        var entry = EntryPoint();
        using var memory = new ProcessMemory(Pid);
        var original = new byte[1];
        if (!memory.TryRead(entry, original))
            throw new TargetException(TargetError.SystemCallFailed, Pid, $"{program}: its entry point 0x{entry:x} cannot be read");
        memory.Write(entry, [Int3]);
        var restored = false;
        try
        {
            Cont(thread, 0);
            while (true)
            {
                var status = WaitBlocking(thread, program, "before reaching its entry point");
                var signal = (status >> 8) & 0xff;
                var ptraceEvent = status >> 16;
                if (ptraceEvent == 0 && signal == Libc.Sigtrap && GetRegisters(Pid).Rip == entry + 1)
                    break;
                Cont(thread, ptraceEvent == 0 ? signal : 0);
            }
            memory.Write(entry, original);
            restored = true;
            var registers = GetRegisters(Pid);
            registers.Rip = entry;
            SetRegisters(Pid, registers);
            thread.Stopped = true;
            thread.PendingSignal = 0;
            _held = true;
        }
        finally
        {
            if (!restored)
                memory.Write(entry, original);
        }
    }

    private void Cont(TracedThread thread, int signal)
    {
        if (Libc.Ptrace(Libc.PtraceCont, thread.Tid, 0, signal) < 0)
            throw Failure("PTRACE_CONT", thread.Tid);
        thread.Stopped = false;
    }

    private int WaitBlocking(TracedThread thread, string program, string when)
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 30;
        while (true)
        {
            var result = Libc.WaitPid(thread.Tid, out var status, Libc.WNoHang | Libc.WAll);
            if (result < 0 && Marshal.GetLastPInvokeError() != Libc.Eintr)
                throw new TargetException(TargetError.Exited, Pid, $"{program} (process {Pid}) went away {when}");
            if (result > 0)
            {
                if ((status & 0x7f) == 0)
                    throw new TargetException(TargetError.Exited, Pid, $"{program} (process {Pid}) exited with status {(status >> 8) & 0xff} {when}");
                if ((status & 0xff) != 0x7f)
                    throw new TargetException(TargetError.Exited, Pid, $"{program} (process {Pid}) was killed by signal {status & 0x7f} {when}");
                thread.Stopped = true;
                return status;
            }
            if (Stopwatch.GetTimestamp() > deadline)
                throw new TargetException(TargetError.Timeout, Pid, $"{program} (process {Pid}) did not reach its entry point within 30 s");
            Libc.MicroSleep(100);
        }
    }

    private ulong EntryPoint()
    {
        var auxv = File.ReadAllBytes($"/proc/{Pid}/auxv");
        for (var offset = 0; offset + 16 <= auxv.Length; offset += 16)
        {
            var type = BinaryPrimitives.ReadUInt64LittleEndian(auxv.AsSpan(offset));
            if (type == AuxEntry)
                return BinaryPrimitives.ReadUInt64LittleEndian(auxv.AsSpan(offset + 8));
            if (type == 0)
                break;
        }
        throw new TargetException(TargetError.SystemCallFailed, Pid, $"process {Pid}: no AT_ENTRY in its auxiliary vector");
    }
}
