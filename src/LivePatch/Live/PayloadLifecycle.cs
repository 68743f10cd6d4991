namespace LivePatch.Live;

/// <summary>An action on a payload, as <see cref="PayloadLifecycle.Allow"/> checks it against the payload's state.</summary>
internal enum PayloadAction
{
    /// <summary>Upload, link and check a payload from its file; redirect nothing.</summary>
    Load,
    /// <summary>Load a payload from its file and redirect its functions.</summary>
    ApplyFile,
    /// <summary>Redirect the functions of a payload loaded or reverted earlier, by name.</summary>
    ApplyLoaded,
    /// <summary>Restore the functions of the applied payload on top.</summary>
    Revert,
    /// <summary>Revert every applied payload and apply a new one from its file, in one stop.</summary>
    Replace,
    /// <summary>Free a loaded or reverted payload and forget it.</summary>
    Unload,
}

/// <summary>
/// The life of a payload in a target — absent → Loaded → Applied ⇄ Reverted → absent — as Xen's
/// <c>livepatch_action</c> switch: which action is allowed in which state, with the refusal for every other pair.
/// </summary>
internal static class PayloadLifecycle
{
    /// <summary>
    /// Checks that <paramref name="action"/> is allowed on the payload <paramref name="name"/> in
    /// <paramref name="record"/>; returns the payload's index in the record (-1 when it is not there: a new one).
    /// </summary>
    /// <exception cref="PatchRefusedException">Not allowed; the message says why and what to do.</exception>
    public static int Allow(PayloadAction action, string name, IReadOnlyList<AppliedPayloadInfo> record, int pid)
    {
        var index = record.ToList().FindIndex(p => p.Name == name);
        var payload = index < 0 ? null : record[index];
        //            absent            Loaded            Applied                Reverted
        // load       yes               NameInUse         AlreadyApplied         NameInUse
        // apply FILE yes               NameInUse         AlreadyApplied         NameInUse
        // replace    yes               NameInUse         AlreadyApplied         NameInUse
        // apply NAME NotLoaded         yes               AlreadyApplied         yes
        // revert     NotApplied        NotApplied        yes, if on top         NotApplied
        // unload     NotLoaded         yes               StillApplied           yes
        switch (action, payload?.State)
        {
            case (PayloadAction.Load or PayloadAction.ApplyFile or PayloadAction.Replace, null):
            case (PayloadAction.ApplyLoaded or PayloadAction.Unload, PayloadState.Loaded or PayloadState.Reverted):
                return index;
            case (_, PayloadState.Applied) when action != PayloadAction.Revert && action != PayloadAction.Unload:
                throw new PatchRefusedException(LivePatchRefusal.AlreadyApplied, $"payload '{name}' is already applied to process {pid} (since {payload!.AppliedAt:u}); revert it first");
            case (PayloadAction.Load or PayloadAction.ApplyFile or PayloadAction.Replace, PayloadState.Loaded):
                throw new PatchRefusedException(LivePatchRefusal.NameInUse, $"payload '{name}' is already loaded in process {pid}: apply it by name, or unload it first");
            case (PayloadAction.Load or PayloadAction.ApplyFile or PayloadAction.Replace, _):
                throw new PatchRefusedException(LivePatchRefusal.NameInUse, $"payload '{name}' was reverted in process {pid}: apply it again by name, or unload it before loading a new build");
            case (PayloadAction.ApplyLoaded, _):
                throw new PatchRefusedException(LivePatchRefusal.NotLoaded, $"process {pid} has no payload '{name}'{Listing(record)}; load it first (livepatch load)");
            case (PayloadAction.Revert, PayloadState.Applied):
                var top = record.ToList().FindLastIndex(p => p.State == PayloadState.Applied);
                return top == index ? index : throw new PatchRefusedException(LivePatchRefusal.NotOnTop,
                    $"payload '{name}' is not on top in process {pid}: '{record[top].Name}' was applied after it; revert '{record[top].Name}' first");
            case (PayloadAction.Revert, _):
                throw new PatchRefusedException(LivePatchRefusal.NotApplied, payload is not null
                    ? $"payload '{name}' is not applied to process {pid} (it was reverted)"
                    : $"process {pid} has no payload '{name}'{Listing(record)}");
            case (PayloadAction.Unload, PayloadState.Applied):
                throw new PatchRefusedException(LivePatchRefusal.StillApplied, $"payload '{name}' is applied to process {pid}: revert it before unloading it");
            default:
                throw new PatchRefusedException(LivePatchRefusal.NotLoaded, $"process {pid} has no payload '{name}'{Listing(record)}");
        }
    }

    /// <summary>Refuses a payload whose dependencies (<c>LIVEPATCH_DEPENDS</c>) are not all applied.</summary>
    /// <exception cref="PatchRefusedException">One is not applied.</exception>
    public static void RequireDependencies(string name, IReadOnlyList<string> depends, IReadOnlyList<AppliedPayloadInfo> record, int pid)
    {
        foreach (var dependency in depends)
            if (!record.Any(p => p.Name == dependency && p.State == PayloadState.Applied))
                throw new PatchRefusedException(LivePatchRefusal.DependencyMissing,
                    $"payload '{name}' depends on payload '{dependency}', which is not applied to process {pid}{Listing(record)}");
    }

    /// <summary>"; it has 'a' (applied), 'b' (reverted)" for messages, or nothing for an empty record.</summary>
    public static string Listing(IReadOnlyList<AppliedPayloadInfo> record) =>
        record.Count == 0 ? "" : $"; it has {string.Join(", ", record.Select(p => $"'{p.Name}' ({p.State.ToString().ToLowerInvariant()})"))}";
}
