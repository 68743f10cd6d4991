using LivePatch.Live;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>What became of the mutants of one run, and one message of each exception type seen, for the report.</summary>
internal sealed class MutantCounts
{
    public long RefusedAtLoad { get; set; }
    public long RefusedAtCheck { get; set; }
    public long RefusedAtApply { get; set; }
    public long Applied { get; set; }

    /// <summary>Mutants with a hook that passed check: loaded into the target and unloaded, never applied (a hook would run).</summary>
    public long LoadedWithHooks { get; set; }

    /// <summary>Mutants with a hook that passed check and were refused when loaded into the target.</summary>
    public long RefusedAtTargetLoad { get; set; }

    /// <summary>Refusals whose message names neither the payload nor its file (they name the target's function).</summary>
    public long WithoutPayloadName { get; set; }

    public Dictionary<string, (long Count, string Example)> Exceptions { get; } = [];

    public long Total => RefusedAtLoad + RefusedAtCheck + RefusedAtApply + Applied + RefusedAtTargetLoad + LoadedWithHooks;

    public override string ToString() =>
        $"{Total} mutants: {RefusedAtLoad} refused at load, {RefusedAtCheck} refused at check, {RefusedAtApply} refused at apply, " +
        $"{Applied} applied and reverted, {RefusedAtTargetLoad + LoadedWithHooks} with hooks loaded into the target ({RefusedAtTargetLoad} refused), not applied; {WithoutPayloadName} refusals name the function, not the payload; exceptions: " +
        string.Join(", ", Exceptions.OrderByDescending(e => e.Value.Count).Select(e => $"{e.Key} {e.Value.Count}"));
}

/// <summary>
/// Feeds corrupted payloads to one attached target as an operator's commands would: load (<see cref="Payload.Parse"/>),
/// <see cref="LivePatcher.Check"/>, then <see cref="LivePatcher.Apply(Payload)"/>, revert and unload for those that pass
/// (<see cref="LivePatcher.Load(Payload)"/> and unload for those with a hook, which apply would run in the target).
/// Only <see cref="LivePatchException"/>s may come out of the library, each one line; anything else propagates to the
/// caller, which names the mutant. The target's functions the payloads replace must never be called by it.
/// </summary>
internal sealed class MutantCampaign(LivePatcher patcher, string file)
{
    public MutantCounts Counts { get; } = new();

    /// <summary>Runs one mutant as far as it goes.</summary>
    /// <exception cref="InvalidOperationException">A refusal was not one line naming the payload, or a refused apply left a record behind.</exception>
    public void Run(PayloadMutant mutant)
    {
        Payload payload;
        try
        {
            payload = Payload.Parse(mutant.Bytes, file);
        }
        catch (PayloadException error)
        {
            Refused(error);
            Counts.RefusedAtLoad++;
            return;
        }

        try
        {
            patcher.Check(payload);
        }
        catch (LivePatchException error)
        {
            Refused(error);
            Counts.RefusedAtCheck++;
            return;
        }

        var hooks = payload.Hooks.Count > 0;
        try
        {
            if (hooks)
                patcher.Load(payload);
            else
                patcher.Apply(payload);
        }
        catch (LivePatchException error)
        {
            Refused(error);
            if (hooks)
                Counts.RefusedAtTargetLoad++;
            else
                Counts.RefusedAtApply++;
            if (patcher.List().Count != 0)
                throw new InvalidOperationException($"a refused {(hooks ? "load" : "apply")} left the record holding {string.Join(", ", patcher.List().Select(p => $"{p.Name} ({p.State})"))}: {error.Message}");
            return;
        }

        if (hooks)
        {
            patcher.Unload(payload.Name);
            Counts.LoadedWithHooks++;
            return;
        }

        patcher.Revert(payload.Name);
        patcher.Unload(payload.Name);
        Counts.Applied++;
    }

    private void Refused(LivePatchException error)
    {
        var type = error.GetType().Name;
        Counts.Exceptions[type] = Counts.Exceptions.TryGetValue(type, out var seen) ? (seen.Count + 1, seen.Example) : (1, error.Message);
        if (error.Message.Contains('\n', StringComparison.Ordinal) || error.Message.Contains('\r', StringComparison.Ordinal))
            throw new InvalidOperationException($"{type} message spans several lines: {error.Message}");
        if (error is PayloadException && !error.Message.StartsWith($"payload {file}: ", StringComparison.Ordinal))
            throw new InvalidOperationException($"PayloadException does not begin with 'payload {file}: ': {error.Message}");
        // Refusals about the target (a symbol it lacks, a function too short) name the function, not always the payload.
        if (!error.Message.Contains($"'{Path.GetFileNameWithoutExtension(file)}'", StringComparison.Ordinal) && !error.Message.Contains(file, StringComparison.Ordinal))
            Counts.WithoutPayloadName++;
    }
}
