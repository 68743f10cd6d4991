using LivePatch.Targets;

namespace LivePatch.Poke;

/// <summary>
/// One site for <see cref="TextPoker"/>: the bytes expected at an address, the bytes to put there, and how many
/// bytes no thread may be stopped strictly inside (the whole instructions the new bytes overlap).
/// </summary>
/// <param name="Address">The first byte of the site.</param>
/// <param name="Expected">What must be there now.</param>
/// <param name="Replacement">What to write; the same length as <paramref name="Expected"/>.</param>
/// <param name="GuardLength">Bytes from <paramref name="Address"/> where a stopped thread's RIP blocks the write (at least the replacement's length).</param>
/// <param name="Description">How messages name the site (<c>compute in worker</c>).</param>
/// <param name="MoveThread">
/// Where a thread stopped inside the site may be moved so that it finishes the old instructions elsewhere (a
/// trampoline holding them relocated), or null; returns null for an address it cannot map.
/// </param>
internal sealed record PokeSite(ulong Address, byte[] Expected, byte[] Replacement, int GuardLength, string Description, Func<ulong, ulong?>? MoveThread = null)
{
    public bool HoldsInside(ulong rip) => rip > Address && rip < Address + (ulong)GuardLength;
}

/// <summary>
/// Writes prepared buffers into live code (the kernel's <c>text_poke</c>): inside one stop of every thread, after
/// checking that no thread is stopped inside a site and that each site holds the expected bytes, each site gets one
/// write and is re-read to verify. A ptrace stop and resume serializes each thread's instruction stream.
/// Each range is one write of <c>/proc/PID/mem</c>, which the kernel copies page by page, looking for a fatal signal
/// only between pages: if livepatch is killed, a range inside one page is whole, a longer one cut at a page boundary.
/// </summary>
internal static class TextPoker
{
    /// <summary>Sites this close are written as one range, the bytes between them rewritten unchanged.</summary>
    internal const int MaxMergedGap = 256;

    /// <summary>
    /// Sites in address order, neighbours merged so that each range is one write: contiguous ones always, and ones
    /// at most <paramref name="maxGap"/> bytes apart when <paramref name="readGap"/> supplies the bytes between them
    /// (read before the stop, checked again inside it with the rest of the range). Overlapping sites are refused:
    /// two changes to one byte have no order.
    /// </summary>
    internal static List<PokeRange> MergeContiguous(IReadOnlyList<PokeSite> sites, int maxGap = 0, Func<ulong, int, byte[]>? readGap = null)
    {
        var clusters = new List<List<PokeSite>>();
        ulong end = 0;
        foreach (var site in sites.OrderBy(s => s.Address))
        {
            if (clusters.Count > 0)
            {
                if (site.Address < end)
                    throw new ArgumentException($"sites overlap at 0x{site.Address:x}: {site.Description} begins before 0x{end:x}", nameof(sites));
                var gap = site.Address - end;
                if (gap == 0 || (gap <= (ulong)maxGap && readGap is not null))
                {
                    clusters[^1].Add(site);
                    end = site.Address + (ulong)site.Expected.Length;
                    continue;
                }
            }
            clusters.Add([site]);
            end = site.Address + (ulong)site.Expected.Length;
        }

        var ranges = new List<PokeRange>(clusters.Count);
        foreach (var cluster in clusters)
        {
            var start = cluster[0].Address;
            var length = (int)(cluster[^1].Address + (ulong)cluster[^1].Expected.Length - start);
            var covered = cluster.Sum(s => s.Expected.Length) == length;
            // The bytes between sites are what is there now (read once per range, before the stop).
            var expected = covered ? new byte[length] : readGap!(start, length);
            foreach (var site in cluster)
                site.Expected.CopyTo(expected, (int)(site.Address - start));
            var replacement = (byte[])expected.Clone();
            foreach (var site in cluster)
                site.Replacement.CopyTo(replacement, (int)(site.Address - start));
            ranges.Add(new PokeRange(start, expected, replacement));
        }
        return ranges;
    }

    /// <summary>
    /// Writes every site in one stop of every thread: each expected bytes checked, written, read back, all rolled
    /// back inside the stop on failure (see <see cref="PokeOptions"/> for the checks that may run inside the stop and
    /// for sites written only when a condition holds there).
    /// </summary>
    public static StopReport Poke(IPatchTarget target, IReadOnlyList<PokeSite> sites, PokeOptions options)
    {
        var conditional = options.ConditionalSites;
        foreach (var site in sites.Concat(conditional))
            if (site.Expected.Length != site.Replacement.Length || site.GuardLength < site.Replacement.Length)
                throw new ArgumentException($"site 0x{site.Address:x}: expected, replacement and guard lengths do not agree", nameof(sites));
        if (conditional.Count > 0 && options.IncludeConditional is null)
            throw new ArgumentException("conditional sites need the condition that includes them", nameof(options));

        // Many close sites (a module's alternatives) become few writes: less time with every thread held. Both plans
        // (with and without the conditional sites) are made before the stop.
        List<PokeSite> all = [.. sites, .. conditional];
        var allRanges = MergeContiguous(all, MaxMergedGap, target.ReadMemory);
        var unconditionalRanges = conditional.Count == 0 ? allRanges : MergeContiguous(sites, MaxMergedGap, target.ReadMemory);
        var obstacle = "";
        var findObstacle = options.FindObstacle;
        if (ReturnsIntoSites(target.Process, all) is { } returns)
            findObstacle = findObstacle is null ? returns : threads => findObstacle(threads) ?? returns(threads);
        return StopTheWorld.Run(target, options.Timeout, threads =>
        {
            options.BeforeWrite?.Invoke(threads);
            var included = options.IncludeConditional?.Invoke(threads) ?? true;
            var writing = included ? all : sites;
            var ranges = included ? allRanges : unconditionalRanges;
            if (findObstacle?.Invoke(threads) is { } blocking)
            {
                obstacle = blocking;
                return StopTheWorld.Outcome.Retry;
            }
            var moves = new List<(int Tid, ulong Rip)>();
            foreach (var thread in threads)
                foreach (var site in writing)
                    if (site.HoldsInside(thread.Rip))
                    {
                        if (site.MoveThread?.Invoke(thread.Rip) is { } moved)
                        {
                            moves.Add((thread.Tid, moved));
                            continue;
                        }
                        obstacle = $"thread {thread.Tid} stayed inside {site.Description} (at +{thread.Rip - site.Address} of 0x{site.Address:x})";
                        return StopTheWorld.Outcome.Retry;
                    }
            // One read per contiguous range; the message still names the site that differs.
            foreach (var range in ranges)
            {
                var current = target.ReadMemory(range.Address, range.Expected.Length);
                if (current.AsSpan().SequenceEqual(range.Expected))
                    continue;
                var site = writing.First(x => x.Address >= range.Address && x.Address < range.Address + (ulong)range.Expected.Length
                    && !current.AsSpan((int)(x.Address - range.Address), x.Expected.Length).SequenceEqual(x.Expected));
                var held = current.AsSpan((int)(site.Address - range.Address), site.Expected.Length);
                throw new TextPokeException(site.Address,
                    $"process {target.Pid}: {site.Description} at 0x{site.Address:x} holds {Convert.ToHexStringLower(held)}, not the expected {Convert.ToHexStringLower(site.Expected)}: another tool changed it; nothing was changed");
            }
            var written = new List<PokeRange>();
            var movedThreads = new List<(int Tid, ulong Rip)>();
            try
            {
                // Threads inside a site finish its old instructions in the trampoline, then return to the old code after it.
                foreach (var (tid, rip) in moves)
                {
                    movedThreads.Add((tid, threads.First(t => t.Tid == tid).Rip));
                    target.SetInstructionPointer(tid, rip);
                }
                foreach (var range in ranges)
                {
                    target.WriteMemory(range.Address, range.Replacement);
                    written.Add(range);
                    var check = target.ReadMemory(range.Address, range.Replacement.Length);
                    if (!check.AsSpan().SequenceEqual(range.Replacement))
                        throw new TextPokeException(range.Address,
                            $"process {target.Pid}: 0x{range.Address:x} reads back {Convert.ToHexStringLower(check)} after writing {Convert.ToHexStringLower(range.Replacement)}");
                    options.RangeWritten?.Invoke(written.Count);
                }
            }
            catch
            {
                // Leave every site fully old: put back what was there, still inside the stop.
                foreach (var range in written)
                    target.WriteMemory(range.Address, range.Expected);
                foreach (var (tid, rip) in movedThreads)
                    target.SetInstructionPointer(tid, rip);
                throw;
            }
            return StopTheWorld.Outcome.Done;
        }, () => obstacle, options.Cancellation);
    }

    /// <summary>
    /// A <c>call</c> among a site's old bytes that ends before the site does leaves its return address inside the
    /// bytes being replaced: a thread still in that callee would come back into the middle of the new ones. Such
    /// return addresses are looked for on every stopped thread's stack (a stop with one retries); null when no site
    /// has such a call. (<c>syscall</c> pushes nothing; a call ending at the site's end returns past it.)
    /// </summary>
    private static Func<IReadOnlyList<StoppedThread>, string?>? ReturnsIntoSites(TargetProcess target, IReadOnlyList<PokeSite> sites)
    {
        List<CodeRange>? ranges = null;
        foreach (var site in sites)
        {
            var decoder = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(site.Expected), site.Address);
            var end = site.Address + (ulong)site.Expected.Length;
            while (decoder.IP < end)
            {
                decoder.Decode(out var instruction);
                if (instruction.IsInvalid || instruction.NextIP > end)
                    break;
                if (instruction.Mnemonic == Iced.Intel.Mnemonic.Call && instruction.NextIP < end)
                    (ranges ??= []).Add(new CodeRange(instruction.NextIP, instruction.NextIP + 1, instruction.NextIP, $"{site.Description} (a call inside the bytes being replaced)"));
            }
        }
        if (ranges is null)
            return null;
        // The unwinder: a return address is a frame's PC, and a stale copy in a dead slot returns nowhere.
        var unwinder = new StackUnwinder(target, ranges.DistinctBy(r => r.Start).OrderBy(r => r.Start));
        return threads => unwinder.FindObstacle(threads) is { } found ? $"{found}: it would return into the middle of the new bytes" : null;
    }
}

/// <summary>How <see cref="TextPoker.Poke"/> writes: its timeout and the checks it runs inside the stop.</summary>
internal sealed record PokeOptions
{
    /// <summary>How long threads may take to stop, and how long to keep retrying while one is in the way.</summary>
    public required TimeSpan Timeout { get; init; }

    /// <summary>Cancels between stop attempts (never inside a stop).</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>Runs first inside the stop, with the threads held; it may refuse by throwing (nothing is written).</summary>
    public Action<IReadOnlyList<StoppedThread>>? BeforeWrite { get; init; }

    /// <summary>
    /// Runs next: a text naming what stands in the way (a thread with an old function on its stack) makes the stop
    /// retry, and the timeout report quote it.
    /// </summary>
    public Func<IReadOnlyList<StoppedThread>, string?>? FindObstacle { get; init; }

    /// <summary>Told the count of ranges written after each one, inside the stop (crash-safety tests end the process there).</summary>
    public Action<int>? RangeWritten { get; init; }

    /// <summary>Sites written in the same stop only when <see cref="IncludeConditional"/> says so, decided with every thread held.</summary>
    public IReadOnlyList<PokeSite> ConditionalSites { get; init; } = [];

    /// <summary>Decides, inside the stop, whether <see cref="ConditionalSites"/> are written (lock prefixes dropped only while one thread can run).</summary>
    public Func<IReadOnlyList<StoppedThread>, bool>? IncludeConditional { get; init; }
}

/// <summary>Bytes written to a target in one write: one site, or neighbouring sites merged.</summary>
internal sealed record PokeRange(ulong Address, byte[] Expected, byte[] Replacement);

/// <summary>A site did not hold the bytes expected, or did not read back what was written; the target was left as it was.</summary>
public sealed class TextPokeException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Refused;

    /// <summary>Creates the exception for the site at <paramref name="address"/>.</summary>
    public TextPokeException(ulong address, string message) : base(message) => Address = address;

    /// <summary>The site's address.</summary>
    public ulong Address { get; }
}
