using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Live;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Poke;

/// <summary>
/// The stack unwinder on targets/unwinding.c, whose threads each stay in a known frame chain: 30 frames of recursion,
/// a stale return address in a dead slot, an old function live under a sleep, a frame without CFI, a signal handler.
/// </summary>
[Collection(ProcessTests.Name)]
public partial class StackUnwinderTests
{
    private static RunningTarget Start() =>
        RunningTarget.Start("targets/unwinding.c", $"-O2 -pthread {Gcc.FixturePath("targets/nocfi.S")}");

    private static int Tid(RunningTarget target, string name) =>
        int.Parse(Regex.Match(target.Ready, $@"\b{name}=(\d+)").Groups[1].Value, CultureInfo.InvariantCulture);

    private static CodeRange Old(TargetProcess target, string name)
    {
        var symbol = target.ResolveSymbol(name);
        return StackConsistency.OldFunction(target, symbol, symbol.Address);
    }

    /// <summary>Stops every thread (registers read as apply reads them), runs <paramref name="work"/> inside the stop, resumes.</summary>
    private static T InsideStop<T>(int pid, Func<IReadOnlyList<StoppedThread>, T> work)
    {
        using var process = AttachedProcess.Attach(pid);
        return process.OnControlThread(() =>
        {
            var threads = process.StopAll(Stopwatch.GetTimestamp() + 5 * Stopwatch.Frequency);
            try
            {
                return work(threads);
            }
            finally
            {
                process.ResumeAll();
            }
        });
    }

    // gdb's own unwind of the same thread, frame by frame: the PC of each.
    private static List<ulong> GdbFrames(int pid, int tid)
    {
        var text = ExternalTool.Run("gdb", "-batch", "-nx", "-p", pid.ToString(CultureInfo.InvariantCulture), "-ex", "thread apply all bt -frame-info location-and-address");
        var section = text[text.IndexOf($"(LWP {tid})", StringComparison.Ordinal)..];
        var end = section.IndexOf("\nThread ", StringComparison.Ordinal);
        return [.. FrameLine().Matches(end < 0 ? section : section[..end]).Select(m => ulong.Parse(m.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture))];
    }

    [Fact]
    public void A_thread_30_frames_deep_unwinds_to_the_frames_gdb_shows()
    {
        using var running = Start();
        var deep = Tid(running, "deep");
        using var target = TargetProcess.Open(running.Pid);
        var unwinder = new StackUnwinder(target, [Old(target, "descend")]);

        var unwind = InsideStop(running.Pid, threads => unwinder.Unwind(threads, everyHit: true));

        var hits = unwind.Hits.Where(h => h.Tid == deep).ToList();
        Assert.Equal(31, hits.Count); // descend(30) ... descend(0)
        Assert.All(hits, h => Assert.Null(h.Scanned));
        Assert.DoesNotContain(unwind.Fallbacks, f => f.Tid == deep);
        var chain = hits[0].Chain;
        Assert.Equal(GdbFrames(running.Pid, deep), chain);
        var message = hits[0].Describe(unwinder.Code);
        Assert.Matches(@"^thread \d+ has unwinding-\w+!descend active: return address 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\) of frame #3; frames libc\.so\.6\S+ ← libc\.so\.6\S+ ← unwinding-\w+!rest\+0x[0-9a-f]+ ← unwinding-\w+!descend\+0x[0-9a-f]+ ← ", message);
        Assert.EndsWith($" ← ... ({chain.Length - FrameHit.NamedFrames} more)", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_thread_unwinds_to_its_first_frame_but_the_one_through_code_without_cfi()
    {
        using var running = Start();
        using var target = TargetProcess.Open(running.Pid);
        var unwinder = new StackUnwinder(target, [Old(target, "compute")]);

        var unwind = InsideStop(running.Pid, threads => unwinder.Unwind(threads));

        var fallback = Assert.Single(unwind.Fallbacks);
        Assert.Equal(Tid(running, "nocfi"), fallback.Tid);
        Assert.Equal("has no CFI in " + target.MainModule.Name, fallback.Why);
        Assert.Equal("nocfi_call", unwinder.Code.Name(fallback.Pc).Split('!')[1].Split('+')[0]);
        Assert.Empty(unwind.Hits);
        Assert.Empty(unwind.Unproven);
        Assert.InRange(unwind.Frames, 6 * 5 + 30, 400);
    }

    // The headline: compute returned long ago; a copy of its return address sits in a dead slot of idle()'s live frame.
    [Fact]
    public void A_stale_return_address_refuses_the_scan_but_not_the_unwinder_and_a_live_frame_is_still_refused_with_its_chain()
    {
        using var running = Start();
        var stale = Tid(running, "stale");
        var live = Tid(running, "live");
        var fix = TestPayloads.Build("live/apply/unwind_fix.c");
        var refused = TestPayloads.Build("live/apply/unwind_live.c");
        using (var target = TargetProcess.Open(running.Pid))
        {
            var compute = Old(target, "compute");
            var scanner = new StackScanner(target, [compute]);
            var unwinder = new StackUnwinder(target, [compute]);

            var (scan, unwind) = InsideStop(running.Pid, threads => (scanner.Scan(threads), unwinder.Unwind(threads)));

            var word = Assert.Single(scan.Hits);
            Assert.Equal(stale, word.Tid);
            Assert.NotNull(word.StackAddress);
            Assert.Empty(unwind.Hits);
        }

        using var patcher = LivePatcher.Attach(running.Pid, new LivePatchOptions { Timeout = Generous.Timeout, Consistency = ConsistencyModel.Stack });
        var applied = patcher.Apply(fix);
        Assert.Equal(PayloadState.Applied, Assert.Single(patcher.List()).State);
        Assert.Equal(1, applied.Attempts);

        var error = Assert.Throws<TargetException>(() => patcher.Apply(refused));
        Assert.Equal(TargetError.Timeout, error.Error);
        Assert.Matches($@"thread {live} has unwinding-\w+!in_old active: return address 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\) of frame #4; frames libc\.so\.6\S+ ← libc\.so\.6\S+ ← unwinding-\w+!rest\+0x[0-9a-f]+ ← unwinding-\w+!hold\+0x[0-9a-f]+ ← unwinding-\w+!in_old\+0x[0-9a-f]+ ← unwinding-\w+!live_thread\+0x[0-9a-f]+ ← libc\.so\.6\S+ ← libc\.so\.6\S+ \(stack consistency\)", error.Message);
        Assert.Single(patcher.List());
    }

    [Fact]
    public void A_frame_without_cfi_falls_back_to_the_scan_which_still_finds_the_old_frame_above_it()
    {
        using var running = Start();
        var nocfi = Tid(running, "nocfi");
        using var target = TargetProcess.Open(running.Pid);
        var unwinder = new StackUnwinder(target, [Old(target, "nocfi_old")]);

        var unwind = InsideStop(running.Pid, threads => unwinder.Unwind(threads));

        var hit = Assert.Single(unwind.Hits);
        Assert.Equal(nocfi, hit.Tid);
        Assert.NotNull(hit.Scanned);
        Assert.Equal(4, hit.Fallback!.Value.Frame); // clock_nanosleep, nanosleep, rest, hold, then nocfi_call's return address
        Assert.Matches($@"^thread {nocfi} has unwinding-\w+!nocfi_old active: return address 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\) at rsp\+0x[0-9a-f]+ \(0x[0-9a-f]+\) on its stack, found by the conservative scan: frame #4 at unwinding-\w+!nocfi_call\+0x[0-9a-f]+ \(0x[0-9a-f]+\) has no CFI in unwinding-\w+, so its stack was scanned from rsp 0x[0-9a-f]+; frames .* ← unwinding-\w+!hold\+0x[0-9a-f]+ ← unwinding-\w+!nocfi_call\+0x[0-9a-f]+$",
            hit.Describe(unwinder.Code));
    }

    // The handler runs on the thread's stack over spin_old's interrupted frame: unwound through glibc's __restore_rt.
    [Fact]
    public void A_frame_interrupted_by_a_signal_handler_is_found_through_the_signal_frame()
    {
        using var running = Start();
        var signal = Tid(running, "signal");
        using var target = TargetProcess.Open(running.Pid);
        var unwinder = new StackUnwinder(target, [Old(target, "spin_old")]);

        var unwind = InsideStop(running.Pid, threads => unwinder.Unwind(threads));

        var hit = Assert.Single(unwind.Hits);
        Assert.Equal(signal, hit.Tid);
        Assert.Null(hit.Scanned); // exact: the signal frame's CFI was understood
        Assert.DoesNotContain(unwind.Fallbacks, f => f.Tid == signal);
        Assert.Equal(GdbFrames(running.Pid, signal), hit.Chain.Where((_, i) => i != 3)); // gdb shows the trampoline's frame without an address
        Assert.Contains("spin_old", unwinder.Code.Name(hit.Chain[4]), StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^#\d+\s+0x([0-9a-f]+) in ", RegexOptions.Multiline)]
    private static partial Regex FrameLine();
}
