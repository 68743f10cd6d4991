using LivePatch.Payloads;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>The blocks mapped in a target for one payload: its text, read-only data, writable data and trampolines (0 where it has none).</summary>
internal sealed record PayloadBlocks(ulong Text, ulong ReadOnly, ulong Data, ulong Trampolines, IReadOnlyList<MappedBlock> Mapped)
{
    /// <summary>Blocks known only as mapped (to free them).</summary>
    public static PayloadBlocks Of(IReadOnlyList<MappedBlock> mapped) => new(0, 0, 0, 0, mapped);
}

/// <summary>
/// A payload's memory in a target: mapped near the functions it replaces (within rel32 reach of them and of each
/// other), freed after a failure before anything could reach it, and unmapped on unload once no thread runs it.
/// </summary>
internal sealed class PayloadMemory(LiveSession session)
{
    /// <summary>
    /// Maps the blocks <paramref name="layout"/> needs, with one trampoline slot per entry, near the entries; each block
    /// is handed to <paramref name="mappedNow"/> as soon as it is mapped (to be recorded: a livepatch killed later
    /// leaves nothing nobody can find).
    /// </summary>
    /// <exception cref="TargetException">No thread stopped, or no free range within reach.</exception>
    public PayloadBlocks Allocate(PayloadLayout layout, IReadOnlyList<PlannedEntry> entries, Action<IReadOnlyList<MappedBlock>> mappedNow)
    {
        var mapped = new List<MappedBlock>();
        try
        {
            // One thread stopped for all the blocks.
            return session.Process.WithOneThreadStopped(_ => Place(layout, entries, mapped, session.Process.MapNear, mappedNow));
        }
        catch
        {
            FreeAfterFailure(PayloadBlocks.Of(mapped));
            throw;
        }
    }

    /// <summary>
    /// Where <see cref="Allocate"/> would map the blocks now, from the process's memory map, mapping nothing: what
    /// <c>check</c> links at, so that it decides as apply would, placement included.
    /// </summary>
    /// <exception cref="TargetException">No free range within reach.</exception>
    public PayloadBlocks Plan(PayloadLayout layout, IReadOnlyList<PlannedEntry> entries)
    {
        var map = session.Target.ReadMemoryMap();
        return Place(layout, entries, [], (start, end, size, protection) =>
        {
            var place = RemoteMemory.PlaceNear(map, start, end, size) ?? throw RemoteMemory.NoPlaceNear(session.Pid, start, end, size);
            map = map.With(new MemoryRegion(place, place + RoundToPage(size), protection, false, 0, 0, ""));
            return place;
        });
    }

    // Text, read-only data, writable data and trampolines, each within reach of the old functions and of the blocks
    // placed before it (stubs reach GOT slots by rel32).
    private static PayloadBlocks Place(PayloadLayout layout, IReadOnlyList<PlannedEntry> entries, List<MappedBlock> mapped,
        Func<ulong, ulong, ulong, MemoryProtection, ulong> mapNear, Action<IReadOnlyList<MappedBlock>>? mappedNow = null)
    {
        var nearStart = entries.Min(e => e.PatchAddress);
        var nearEnd = entries.Max(e => e.PatchAddress) + EntryPlanner.JumpLength;
        ulong Map(PayloadRegionSize region, MemoryProtection protection, string use)
        {
            if (region.Size == 0)
                return 0;
            var start = Math.Min(nearStart, mapped.Count == 0 ? nearStart : mapped.Min(m => m.Address));
            var end = Math.Max(nearEnd, mapped.Count == 0 ? nearEnd : mapped.Max(m => m.Address + m.Size));
            var address = mapNear(start, end, region.Size, protection);
            mapped.Add(new MappedBlock(address, RoundToPage(region.Size), use));
            mappedNow?.Invoke([.. mapped]);
            return address;
        }
        var text = Map(layout.Text, MemoryProtection.Read | MemoryProtection.Execute, "text");
        var readOnly = Map(layout.ReadOnly, MemoryProtection.Read, "rodata");
        var data = Map(layout.Data, MemoryProtection.Read | MemoryProtection.Write, "data");
        // One trampoline and room for one callee-save thunk per entry (Thunks).
        var trampolines = Map(new PayloadRegionSize((ulong)(entries.Count * (Trampolines.Size + CalleeSaveThunk.MaxSize)), 16), MemoryProtection.Read | MemoryProtection.Execute, "trampolines");
        return new PayloadBlocks(text, readOnly, data, trampolines, mapped);
    }

    /// <summary>
    /// Frees blocks no code can reach yet, after a failure. Cleaning up must not hide the failure: a target that went
    /// away keeps nothing to free; a busy thread may miss the first stop, so it is tried once more before the blocks
    /// are left mapped (they are unreachable).
    /// </summary>
    public void FreeAfterFailure(PayloadBlocks blocks)
    {
        for (var attempt = 0; attempt < 2; attempt++)
        {
            try
            {
                if (blocks.Mapped.Count > 0)
                {
                    session.Process.WithOneThreadStopped(_ =>
                    {
                        foreach (var block in blocks.Mapped)
                            session.Process.Unmap(block.Address, block.Size);
                        return 0;
                    });
                }
                return;
            }
            catch (TargetException error) when (error.Error != TargetError.Exited && attempt == 0)
            {
            }
            catch (TargetException)
            {
                return;
            }
        }
    }

    /// <summary>Unmaps <paramref name="blocks"/> in one stop once no thread runs their code or has it on its stack (retried until the timeout).</summary>
    /// <exception cref="TargetException">A thread kept the code active until the timeout.</exception>
    public StopReport UnmapWhenUnused(string name, IReadOnlyList<MappedBlock> blocks)
    {
        var ranges = blocks.Where(b => b.Use is "text" or "trampolines")
            .Select(b => new CodeRange(b.Address, b.Address + b.Size, b.Address, $"payload '{name}' ({b.Use})")).ToList();
        // Payload code has no CFI: a frame in it makes the unwinder scan the rest of that stack, so nothing is missed.
        var unwinder = new StackUnwinder(session.Target, ranges);
        var obstacle = "";
        var unmapped = 0;
        return StopTheWorld.Run(session.Process, session.Options.Timeout, threads =>
        {
            if (unwinder.FindObstacle(threads) is { } found)
            {
                obstacle = found;
                return StopTheWorld.Outcome.Retry;
            }
            // Livepatch never maps a stack: a block holding a thread's stack pointer is not its memory (a forged record).
            if (threads.FirstOrDefault(t => blocks.Any(b => t.Rsp >= b.Address && t.Rsp < b.Address + b.Size)) is { Tid: not 0 } holder)
                throw new PatchRefusedException(LivePatchRefusal.RecordInvalid,
                    $"process {session.Pid}: payload '{RecordCheck.Text(name)}' names memory holding the stack of thread {holder.Tid} (rsp 0x{holder.Rsp:x}): it is not memory livepatch mapped; nothing was unmapped");
            foreach (var block in blocks)
            {
                session.Process.Unmap(block.Address, block.Size);
                session.Checkpoint($"block-{++unmapped}-unmapped");
            }
            return StopTheWorld.Outcome.Done;
        }, () => $"{obstacle}; payload '{name}' stays loaded", session.Options.Cancellation);
    }

    /// <summary>Every page of the block lies in a mapping (the kernel may merge neighbouring blocks of one protection into one).</summary>
    public static bool IsMapped(MemoryMap map, MappedBlock block)
    {
        for (var page = block.Address; page < block.Address + block.Size; page += 4096)
            if (!map.Regions.Any(r => r.Contains(page)))
                return false;
        return true;
    }

    private static ulong RoundToPage(ulong size) => (size + 0xfff) & ~0xfffUL;
}
