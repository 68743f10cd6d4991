using LivePatch.Payloads;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>A payload's hook as recorded in the target, so that any later livepatch run can call it.</summary>
/// <param name="Kind">When it runs.</param>
/// <param name="Symbol">The hook's name in the payload.</param>
/// <param name="Address">Where it was linked in the target.</param>
public sealed record AppliedHookInfo(PayloadHookKind Kind, string Symbol, ulong Address);

/// <summary>Runs a payload's hooks in the target, outside the stop: pre-apply and pre-revert may veto, post hooks report.</summary>
internal sealed class HookRunner(LiveSession session)
{
    /// <summary>The payload's hooks at the addresses they were linked at, for the record.</summary>
    public static List<AppliedHookInfo> Linked(Payload payload, LinkedPayload linked) =>
        [.. payload.Hooks.OrderBy(h => h.Kind).Select(h => new AppliedHookInfo(h.Kind, h.Name, linked.AddressOf(h.Symbol)))];

    /// <summary>Before one stop that reverts every payload in <paramref name="reverted"/> and applies <paramref name="applied"/>: their pre-revert hooks (newest first), then its pre-apply hook.</summary>
    public void BeforeReplace(IEnumerable<AppliedPayloadInfo> reverted, AppliedPayloadInfo applied)
    {
        foreach (var payload in reverted.Reverse())
            Run(payload, PayloadHookKind.PreRevert);
        Run(applied, PayloadHookKind.PreApply);
    }

    /// <summary>After a replace is recorded: the post-revert hooks of the payloads it reverted (newest first), then the new one's post-apply hook.</summary>
    public void AfterReplace(IEnumerable<AppliedPayloadInfo> reverted, AppliedPayloadInfo applied)
    {
        foreach (var payload in reverted.Reverse())
            Run(payload, PayloadHookKind.PostRevert);
        Run(applied, PayloadHookKind.PostApply);
    }

    /// <summary>
    /// Refuses, before anything changes, a payload with hooks (<paramref name="kinds"/>) in a process that enforces a
    /// shadow stack or indirect branch tracking on a thread: a hook call returns to an address the thread's shadow stack
    /// never held, and its way back is an indirect jump onto code without <c>endbr64</c> (<see cref="ControlFlowEnforcement"/>).
    /// </summary>
    /// <exception cref="PatchRefusedException">The process enforces CET (<see cref="LivePatchRefusal.ControlFlowEnforcement"/>).</exception>
    public void RequireCallable(string payload, IEnumerable<PayloadHookKind> kinds)
    {
        var hooks = kinds.Distinct().Order().ToList();
        if (hooks.Count == 0)
            return;
        if (ControlFlowEnforcement.FirstThreadWith(session.Pid, CetFeatures.ShadowStack | CetFeatures.IndirectBranchTracking) is { } thread)
            throw new PatchRefusedException(LivePatchRefusal.ControlFlowEnforcement,
                $"payload '{payload}': process {session.Pid} enforces CET on thread {thread.Tid} ({ControlFlowEnforcement.StatusField} {ControlFlowEnforcement.Describe(thread.Features)}), " +
                $"and livepatch cannot call its {string.Join(", ", hooks.Select(PayloadHook.Describe))} hook{(hooks.Count > 1 ? "s" : "")} there: the call's return address is not on the shadow stack, so the hook's ret would kill the process; " +
                "payloads with hooks are refused in such a process, nothing was changed");
    }

    /// <summary>
    /// Runs the payload's hook of <paramref name="kind"/>, if it has one, in the target: its main thread (or another when
    /// the main one is gone) is stopped alone and made to call the hook, the other threads running on, then put back
    /// exactly as it was (<see cref="PtraceSession.CallFunction"/>). A pre-apply or pre-revert hook that returns
    /// non-zero vetoes the action; a hook that faults or outlives <see cref="LivePatchOptions.HookTimeout"/> is abandoned.
    /// </summary>
    /// <exception cref="PatchRefusedException">Vetoed (<see cref="LivePatchRefusal.VetoedByHook"/>) or the hook faulted (<see cref="LivePatchRefusal.HookFailed"/>).</exception>
    /// <exception cref="TargetException">The hook did not return before the timeout (<see cref="TargetError.Timeout"/>), or the process went away.</exception>
    public void Run(AppliedPayloadInfo payload, PayloadHookKind kind)
    {
        if (payload.Hooks.FirstOrDefault(h => h.Kind == kind) is not { } hook)
            return;
        RequireCallable(payload.Name, [kind]);
        var timeout = session.Options.HookTimeout;
        var result = session.Process.CallFunction(hook.Address, timeout);
        var which = $"payload '{payload.Name}': its {PayloadHook.Describe(kind)} hook {hook.Symbol} (process {session.Pid}, thread {result.Tid})";
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
                throw new TargetException(TargetError.Timeout, session.Pid,
                    $"{which} did not return within {timeout.TotalMilliseconds:0.###} ms: it was abandoned and the thread put back where it was (the hook may have done part of its work); {outcome}");
            case RemoteCallEnd.Faulted:
                throw new PatchRefusedException(LivePatchRefusal.HookFailed,
                    $"{which} crashed with {result.SignalName} at 0x{result.FaultInstruction:x} ({(result.Signal == 6 ? "it called abort" : $"address 0x{result.FaultAddress:x}")}): the signal was not delivered and the thread was put back where it was; {outcome}");
            case RemoteCallEnd.Returned when kind is PayloadHookKind.PreApply or PayloadHookKind.PreRevert && (int)(uint)result.ReturnValue is var code and not 0:
                throw new PatchRefusedException(LivePatchRefusal.VetoedByHook, $"{which} returned {code}: {outcome}");
        }
    }
}
