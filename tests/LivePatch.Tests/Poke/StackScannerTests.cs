using System.Diagnostics;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Live;

namespace LivePatch.Tests.Poke;

/// <summary>The stack scanner on real stopped processes whose call chains are known.</summary>
[Collection(ProcessTests.Name)]
public class StackScannerTests
{
    private static CodeRange Whole(TargetProcess target, string name)
    {
        var symbol = target.ResolveSymbol(name);
        return new CodeRange(symbol.Address, symbol.Address + symbol.Size, symbol.Address, name);
    }

    /// <summary>Stops every thread, scans, reads each hit's stack word again while they are held, resumes.</summary>
    private static (StackScan Scan, IReadOnlyList<StoppedThread> Threads, List<ulong> Words) ScanStopped(int pid, TargetProcess target, StackScanner scanner)
    {
        using var session = PtraceSession.Attach(pid);
        return session.OnTracer(() =>
        {
            session.StopAll(Stopwatch.GetTimestamp() + 5 * Stopwatch.Frequency);
            try
            {
                var threads = session.StoppedThreads.Select(tid =>
                {
                    var registers = session.GetRegisters(tid);
                    return new StoppedThread(tid, registers.Rip, registers.Rsp);
                }).ToList();
                var scan = scanner.Scan(threads, everyHit: true);
                var words = scan.Hits.Where(h => h.StackAddress is not null)
                    .Select(h => BitConverter.ToUInt64(target.ReadMemory(h.StackAddress!.Value, 8))).ToList();
                return (scan, (IReadOnlyList<StoppedThread>)threads, words);
            }
            finally
            {
                session.ResumeAll();
            }
        });
    }

    // sleeper thread -> sleep_inside -> poll_for -> nanosleep (libc): two return addresses in the ranges, in that order up the stack.
    [Fact]
    public void Each_return_address_of_a_known_call_chain_is_found_where_the_call_pushed_it()
    {
        using var sleeping = SleepingTarget.Start();
        sleeping.WaitUntilInside(1);
        using var target = TargetProcess.Open(sleeping.Pid);
        var scanner = new StackScanner(target, [Whole(target, "sleep_inside"), Whole(target, "wait_outside"), Whole(target, "poll_for")]);

        var (scan, threads, words) = ScanStopped(sleeping.Pid, target, scanner);

        var sleeper = threads.Single(t => t.Tid == sleeping.Sleeper);
        var stack = target.ReadMemoryMap().Find(sleeper.Rsp)!.Value;
        Assert.Empty(scan.Unproven);
        Assert.All(scan.Hits, h => Assert.Equal(sleeping.Sleeper, h.Tid)); // nothing on the main thread's stack
        var hits = scan.Hits.Where(h => h.StackAddress is not null).ToList();
        Assert.Equal(["poll_for", "sleep_inside"], hits.Select(h => h.Range.Name));
        Assert.Equal(hits.Select(h => h.Value), words); // each word is where the hit says
        Assert.All(hits, h => Assert.InRange(h.StackAddress!.Value, sleeper.Rsp, stack.End - 8));
        Assert.True(hits[0].StackAddress < hits[1].StackAddress, "the callee's return address lies below its caller's");
        // sleep_inside's return address follows its call of poll_for.
        var call = target.ReadMemory(hits[1].Value - 5, 5);
        Assert.Equal(0xe8, call[0]);
        Assert.Equal(sleeping.Process.ReadyAddress("poll_for"), hits[1].Value + (ulong)(long)BitConverter.ToInt32(call, 1));
        Assert.Matches(@"^thread \d+ has sleep_inside active: return address 0x[0-9a-f]+ \(offset 0x[0-9a-f]+\) at rsp\+0x[0-9a-f]+ \(0x[0-9a-f]+\) on its stack$", hits[1].ToString());
        Assert.InRange(scan.BytesScanned, 64, 1 << 20);
    }

    [Fact]
    public void A_stack_longer_than_the_limit_cannot_be_proven_free()
    {
        using var sleeping = SleepingTarget.Start();
        sleeping.WaitUntilInside(1);
        using var target = TargetProcess.Open(sleeping.Pid);
        var scanner = new StackScanner(target, [Whole(target, "sleep_inside")], limit: 64);

        var (scan, threads, _) = ScanStopped(sleeping.Pid, target, scanner);

        Assert.Empty(scan.Hits);
        Assert.Equal(threads.Count, scan.Unproven.Count);
        Assert.Contains(scan.Unproven, u => u.StartsWith($"thread {sleeping.Sleeper}: its stack from rsp 0x", StringComparison.Ordinal) && u.Contains("beyond the 64 bytes scan limit", StringComparison.Ordinal));
        Assert.StartsWith($"thread ", scan.Obstacle, StringComparison.Ordinal);
    }

    // parking's thread is blocked in the syscall at park_entry+0: its RIP is in the range, no return address is needed.
    [Fact]
    public void A_thread_whose_rip_is_in_a_range_is_running_it()
    {
        var parked = Gcc.FixturePath("targets/parked.S");
        using var parking = RunningTarget.Start("targets/parking.c", $"-O2 -g -pthread {parked}");
        var entry = parking.ReadyAddress("park_entry");
        var parker = Assert.Single(parking.OtherThreads());
        using var target = TargetProcess.Open(parking.Pid);
        var scanner = new StackScanner(target, [new CodeRange(entry, entry + 8, entry + 1, "park_entry")]);

        var (scan, _, _) = ScanStopped(parking.Pid, target, scanner);

        var hit = Assert.Single(scan.Hits);
        Assert.Equal(parker, hit.Tid);
        Assert.Null(hit.StackAddress);
        Assert.Equal(entry + 2, hit.Value);
        Assert.Equal($"thread {parker} is running park_entry (rip 0x{entry + 2:x}, offset 0x2)", scan.Obstacle);
    }
}
