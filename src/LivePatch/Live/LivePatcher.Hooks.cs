using System.Diagnostics;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>A payload's hook as recorded in the target, so that any later livepatch run can call it.</summary>
/// <param name="Kind">When it runs.</param>
/// <param name="Symbol">The hook's name in the payload.</param>
/// <param name="Address">Where it was linked in the target.</param>
public sealed record AppliedHookInfo(PayloadHookKind Kind, string Symbol, ulong Address);

public sealed partial class LivePatcher
{
    /// <summary>The payload's hooks at the addresses they were linked at, for the record.</summary>
    private static List<AppliedHookInfo> LinkedHooks(Payload payload, LinkedPayload linked) =>
        [.. payload.Hooks.OrderBy(h => h.Kind).Select(h => new AppliedHookInfo(h.Kind, h.Name, linked.AddressOf(h.Symbol)))];

    /// <summary>Before one stop that reverts every payload in <paramref name="reverted"/> and applies <paramref name="applied"/>: their pre-revert hooks (newest first), then its pre-apply hook.</summary>
    private void RunHooksBeforeReplace(IEnumerable<AppliedPayloadInfo> reverted, AppliedPayloadInfo applied)
    {
        foreach (var payload in reverted.Reverse())
            RunHook(payload, PayloadHookKind.PreRevert);
        RunHook(applied, PayloadHookKind.PreApply);
    }

    /// <summary>After a replace is recorded: the post-revert hooks of the payloads it reverted (newest first), then the new one's post-apply hook.</summary>
    private void RunHooksAfterReplace(IEnumerable<AppliedPayloadInfo> reverted, AppliedPayloadInfo applied)
    {
        foreach (var payload in reverted.Reverse())
            RunHook(payload, PayloadHookKind.PostRevert);
        RunHook(applied, PayloadHookKind.PostApply);
    }

    /// <summary>
    /// Runs the payload's hook of <paramref name="kind"/>, if it has one, in the target: its main thread (or another when
    /// the main one is gone) is stopped alone and made to call the hook, the other threads running on, then put back
    /// exactly as it was (<see cref="PtraceSession.CallFunction"/>). A pre-apply or pre-revert hook that returns
    /// non-zero vetoes the action; a hook that faults or outlives <see cref="LivePatchOptions.HookTimeout"/> is abandoned.
    /// </summary>
    /// <exception cref="PatchRefusedException">Vetoed (<see cref="LivePatchRefusal.VetoedByHook"/>) or the hook faulted (<see cref="LivePatchRefusal.HookFailed"/>).</exception>
    /// <exception cref="TargetException">The hook did not return before the timeout (<see cref="TargetError.Timeout"/>), or the process went away.</exception>
    private void RunHook(AppliedPayloadInfo payload, PayloadHookKind kind)
    {
        if (payload.Hooks.FirstOrDefault(h => h.Kind == kind) is not { } hook)
            return;
        var timeout = _options.HookTimeout;
        var result = _session.OnTracer(() =>
        {
            var tid = _session.StopOne(Stopwatch.GetTimestamp() + (long)(Math.Max(_options.Timeout.TotalSeconds, 1) * Stopwatch.Frequency));
            try
            {
                return _session.CallFunction(tid, hook.Address, timeout);
            }
            finally
            {
                _session.ResumeAll();
            }
        });
        var which = $"payload '{payload.Name}': its {PayloadHook.Describe(kind)} hook {hook.Symbol} (process {Pid}, thread {result.Tid})";
        var outcome = kind switch
        {
            PayloadHookKind.PreApply => "apply refused, nothing was redirected",
            PayloadHookKind.PostApply => "the payload is applied",
            PayloadHookKind.PreRevert => "revert refused, the payload stays applied",
            _ => "the payload is reverted",
        };
        switch (result.End)
        {
            case RemoteCallEnd.TimedOut:
                throw new TargetException(TargetError.Timeout, Pid,
                    $"{which} did not return within {timeout.TotalMilliseconds:0.###} ms: it was abandoned and the thread put back where it was (the hook may have done part of its work); {outcome}");
            case RemoteCallEnd.Faulted:
                throw new PatchRefusedException(LivePatchRefusal.HookFailed,
                    $"{which} crashed with {result.SignalName} at 0x{result.FaultInstruction:x} (address 0x{result.FaultAddress:x}): the signal was not delivered and the thread was put back where it was; {outcome}");
            case RemoteCallEnd.Returned when kind is PayloadHookKind.PreApply or PayloadHookKind.PreRevert && (int)(uint)result.ReturnValue is var code and not 0:
                throw new PatchRefusedException(LivePatchRefusal.VetoedByHook, $"{which} returned {code}: {outcome}");
        }
    }
}
