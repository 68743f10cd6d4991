using System.Text.Json.Serialization;

namespace LivePatch.Live;

/// <summary>An action that changes which code a target runs, as its intent names it.</summary>
public enum PendingActionKind
{
    /// <summary>Redirect a payload's functions (<c>apply</c>, from a file or by name).</summary>
    Apply,
    /// <summary>Restore the functions of the applied payload on top.</summary>
    Revert,
    /// <summary>Revert every applied payload and apply a new one, in one stop.</summary>
    Replace,
    /// <summary>Unmap a loaded or reverted payload and forget it.</summary>
    Unload,
    /// <summary>
    /// Map a payload's memory (for load, apply or replace), each block named in <see cref="PendingAction.Mapped"/> as
    /// soon as it is mapped; the record of the action itself (or the next intent) replaces it. Recovered by freeing
    /// the blocks no payload of the record names.
    /// </summary>
    Load,
}

/// <summary>
/// The intent an action records in the target before it writes any code: every site with its address and its old
/// and new bytes, and the record as it will be once the action is done. The action's last record write holds the
/// final payloads and clears the intent at once. A livepatch run that dies in between leaves it behind; then every
/// other action refuses and <see cref="LivePatcher.Recover"/> completes or rolls it back.
/// </summary>
/// <param name="Action">What the action was.</param>
/// <param name="Payloads">The payloads it acts on (for replace: the new one).</param>
/// <param name="Livepatch">The process id of the livepatch run that recorded it.</param>
/// <param name="StartedAt">When it was recorded.</param>
/// <param name="Sites">Every site it writes, each in one piece.</param>
/// <param name="After">The payloads the record holds once the action is done.</param>
public sealed record PendingAction(
    PendingActionKind Action, IReadOnlyList<string> Payloads, int Livepatch, DateTimeOffset StartedAt,
    IReadOnlyList<PendingSite> Sites, IReadOnlyList<AppliedPayloadInfo> After)
{
    /// <summary>Memory mapped for this action that the record does not list yet (a payload loaded from its file now).</summary>
    public IReadOnlyList<MappedBlock> Mapped { get; init; } = [];

    /// <summary>For unload: the blocks it unmaps.</summary>
    public IReadOnlyList<MappedBlock> Unmaps { get; init; } = [];

    /// <summary>Set by a recover before it writes anything: a recover interrupted in turn is finished the same way.</summary>
    public RecoveryOutcome? Recovery { get; init; }

    /// <summary>
    /// Set by a recover that found a site already new: the new code may have run (threads resumed when livepatch
    /// died), so a rollback keeps the payload's memory and records it as reverted instead of freeing it.
    /// </summary>
    public bool NewCodeMayHaveRun { get; init; }

    /// <summary>One line naming the action and its payloads (<c>apply of 'fix'</c>).</summary>
    public string Describe() =>
        $"{Action.ToString().ToLowerInvariant()} of {string.Join(", ", Payloads.Select(p => $"'{p}'"))}";
}

/// <summary>
/// One site of a pending action. A site is written with one write while every thread is stopped, so it holds either
/// its old or its new bytes; the guards say how many bytes from <paramref name="Address"/> no stopped thread may be
/// strictly inside when each side is overwritten (the whole instructions it overlaps).
/// </summary>
/// <param name="Function">The function, <c>module!name</c>.</param>
/// <param name="Address">The first byte written.</param>
/// <param name="OldBytes">What the site held before.</param>
/// <param name="NewBytes">What the action writes.</param>
/// <param name="OldGuard">Guard when the old bytes are overwritten (5 for a jump; the displaced instructions for original code).</param>
/// <param name="NewGuard">Guard when the new bytes are overwritten.</param>
public sealed record PendingSite(string Function, ulong Address,
    [property: JsonConverter(typeof(HexBytesConverter))] byte[] OldBytes,
    [property: JsonConverter(typeof(HexBytesConverter))] byte[] NewBytes, int OldGuard, int NewGuard)
{
    /// <summary>The original instructions at the site, when one side is original code: a thread stopped among them is moved to <see cref="Trampoline"/>.</summary>
    [JsonConverter(typeof(HexBytesConverter))]
    public byte[]? DisplacedBytes { get; init; }

    /// <summary>The trampoline holding <see cref="DisplacedBytes"/> relocated, or 0.</summary>
    public ulong Trampoline { get; init; }

    /// <summary>What <paramref name="current"/> says of this site: old, new, a mix of both (torn), or something else.</summary>
    public SiteState Classify(ReadOnlySpan<byte> current)
    {
        var old = OldBytes;
        var @new = NewBytes;
        if (current.SequenceEqual(old))
            return SiteState.Old;
        if (current.SequenceEqual(@new))
            return SiteState.New;
        for (var i = 0; i < current.Length; i++)
            if (current[i] != old[i] && current[i] != @new[i])
                return SiteState.Foreign;
        return SiteState.Torn;
    }
}

/// <summary>What a site of a pending action holds now.</summary>
public enum SiteState
{
    /// <summary>Its old bytes: the action did not write it.</summary>
    Old,
    /// <summary>Its new bytes: the action wrote it.</summary>
    New,
    /// <summary>Some bytes old, the others new: a write cut short (only possible for a site that crosses a page boundary).</summary>
    Torn,
    /// <summary>Bytes that are neither: another tool changed it.</summary>
    Foreign,
}

/// <summary>How a recover ended an interrupted action.</summary>
public enum RecoveryOutcome
{
    /// <summary>Every site holds its new bytes and the record says what the action would have made it say.</summary>
    Completed,
    /// <summary>Every site holds its old bytes and the record says what it said before the action.</summary>
    RolledBack,
    /// <summary>The intent was forgotten and no code written (<see cref="LivePatcher.AbandonInterrupted"/>): the record says what it said before.</summary>
    Abandoned,
}

/// <summary>An interrupted (or running) action found in a target's record, with what each of its sites holds now.</summary>
/// <param name="Action">The intent as recorded.</param>
/// <param name="InProgress">True when the livepatch run that recorded it still traces the target: it is working, not dead.</param>
/// <param name="Sites">What each site of <paramref name="Action"/> holds now, in its order.</param>
/// <param name="BlocksMapped">For unload: how many of the blocks it unmaps are still mapped.</param>
public sealed record InterruptedAction(PendingAction Action, bool InProgress, IReadOnlyList<SiteState> Sites, int BlocksMapped);

/// <summary>What <see cref="LivePatcher.Recover"/> did.</summary>
/// <param name="Action">The interrupted action, or null when there was none.</param>
/// <param name="Outcome">Completed or rolled back; null when there was nothing to recover.</param>
/// <param name="Sites">What each site held when the recover began.</param>
/// <param name="Written">Sites the recover rewrote.</param>
/// <param name="Freed">Blocks unmapped: those of a payload loaded for the action and never reachable, or the rest of an unload's.</param>
/// <param name="RecordedReverted">The payload recorded as reverted because its code may have run, or null.</param>
/// <param name="ThreadsStopped">Threads held in the stop that rewrote sites (0 when nothing was written).</param>
/// <param name="Pause">How long they were held.</param>
public sealed record RecoverReport(
    PendingAction? Action, RecoveryOutcome? Outcome, IReadOnlyList<SiteState> Sites, int Written, IReadOnlyList<MappedBlock> Freed,
    string? RecordedReverted, int ThreadsStopped, TimeSpan Pause);
