namespace LivePatch.Targets;

/// <summary>The Intel CET features the kernel enforces on a thread, as <c>/proc/PID/task/TID/status</c> lists them.</summary>
[Flags]
internal enum CetFeatures
{
    /// <summary>None: the kernel enforces nothing, or lists no <c>x86_Thread_features</c> (before Linux 6.6, or built without user shadow stacks).</summary>
    None = 0,

    /// <summary><c>shstk</c>: every <c>ret</c> must return to the address its <c>call</c> pushed on the thread's shadow stack.</summary>
    ShadowStack = 1,

    /// <summary><c>wrss</c>: the thread may write its shadow stack with <c>WRSS</c>.</summary>
    ShadowStackWrites = 2,

    /// <summary><c>ibt</c>: every indirect call or jump must land on <c>endbr64</c> (no mainline kernel enforces it in user space yet).</summary>
    IndirectBranchTracking = 4,
}

/// <summary>
/// Control-flow enforcement (CET) in a target: which of its threads run with a shadow stack or indirect branch
/// tracking. LivePatch's jumps, trampolines and thunks only use <c>jmp</c> and matched <c>call</c>/<c>ret</c> pairs, which
/// a shadow stack accepts; a hook call made with ptrace does not (the hook's <c>ret</c> pops a return address its
/// shadow stack never got), and under indirect branch tracking a trampoline or the call's way back is reached by an
/// indirect branch onto code that does not start with <c>endbr64</c>. The actions that would do those refuse, naming this.
/// </summary>
internal static class ControlFlowEnforcement
{
    /// <summary>The status field that lists a thread's enabled features (Linux 6.6+).</summary>
    public const string StatusField = "x86_Thread_features:";

    /// <summary>The features a status field's text lists (<c>shstk wrss</c>); words it does not know are ignored.</summary>
    public static CetFeatures Parse(string? text)
    {
        var features = CetFeatures.None;
        foreach (var word in (text ?? "").Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
            features |= word switch
            {
                "shstk" => CetFeatures.ShadowStack,
                "wrss" => CetFeatures.ShadowStackWrites,
                "ibt" => CetFeatures.IndirectBranchTracking,
                _ => CetFeatures.None,
            };
        return features;
    }

    /// <summary>The features enforced on thread <paramref name="tid"/> of <paramref name="pid"/> (none when the kernel lists none).</summary>
    public static CetFeatures OfThread(int pid, int tid) => Parse(ProcStatus.Text(pid, tid, StatusField));

    /// <summary>
    /// The first thread of <paramref name="pid"/> with a feature of <paramref name="wanted"/> enforced, and its features;
    /// null when no thread has one (threads are enabled one by one, so every thread is read).
    /// </summary>
    public static (int Tid, CetFeatures Features)? FirstThreadWith(int pid, CetFeatures wanted)
    {
        foreach (var tid in TargetFiles.TaskIds(pid))
            if (OfThread(pid, tid) is var features && (features & wanted) != 0)
                return (tid, features);
        return null;
    }

    /// <summary>The features as the kernel names them (<c>shstk wrss</c>).</summary>
    public static string Describe(CetFeatures features) =>
        features == CetFeatures.None ? "none" : string.Join(' ', new[]
        {
            (CetFeatures.ShadowStack, "shstk"), (CetFeatures.ShadowStackWrites, "wrss"), (CetFeatures.IndirectBranchTracking, "ibt"),
        }.Where(f => features.HasFlag(f.Item1)).Select(f => f.Item2));
}
