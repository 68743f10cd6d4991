using LivePatch.Payloads;
using LivePatch.Poke;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>
/// Applies, reverts and replaces payloads in one running process, as Xen's livepatch does for a hypervisor: every
/// action checks what it may do (<see cref="PayloadLifecycle"/>), prepares everything — parsing, resolving, linking,
/// allocating, copying code — and then changes code in one stop of every thread. What is applied is recorded in the
/// process itself, so any later run can list, revert or recover it. Dispose detaches on every path.
/// </summary>
public sealed class LivePatcher : IDisposable
{
    private readonly LiveSession _session;
    private readonly PayloadActions _actions;
    private readonly bool _ownsProcess;

    /// <summary>
    /// Works on <paramref name="process"/>, which the caller keeps and disposes (a program held by
    /// <see cref="ProgramLauncher"/>, say); its debug files are looked for in the options' directories first.
    /// </summary>
    /// <exception cref="DebugDirectoryNotFoundException">A directory of <see cref="LivePatchOptions.DebugDirectories"/> does not exist.</exception>
    public LivePatcher(AttachedProcess process, LivePatchOptions? options = null) : this(process, options, ownsProcess: false)
    {
    }

    private LivePatcher(AttachedProcess process, LivePatchOptions? options, bool ownsProcess)
    {
        ArgumentNullException.ThrowIfNull(process);
        StopWindowCode.EnsureCompiled();
        options ??= new LivePatchOptions();
        process.Process.SearchDebugDirectoriesFirst(options.DebugDirectories);
        process.StopOneWait = options.Timeout > TimeSpan.FromSeconds(1) ? options.Timeout : TimeSpan.FromSeconds(1);
        _session = new LiveSession(process, options);
        _actions = new PayloadActions(_session);
        _ownsProcess = ownsProcess;
    }

    /// <summary>The target's process id.</summary>
    public int Pid => _session.Pid;

    /// <summary>
    /// Attaches to process <paramref name="pid"/>: seizes every thread with ptrace (so no other livepatch or debugger
    /// can act meanwhile) without stopping them; each action stops them only for its write.
    /// </summary>
    /// <exception cref="TargetException">No such process, no permission, or it is busy (another tracer).</exception>
    /// <exception cref="DebugDirectoryNotFoundException">A directory of <see cref="LivePatchOptions.DebugDirectories"/> does not exist.</exception>
    public static LivePatcher Attach(int pid, LivePatchOptions? options = null)
    {
        DebugFiles.Directories(options?.DebugDirectories ?? []); // refused before the process is seized
        return new(AttachedProcess.Attach(pid), options, ownsProcess: true);
    }

    /// <summary>The payloads recorded in process <paramref name="pid"/>, oldest first; needs no ptrace.</summary>
    public static IReadOnlyList<AppliedPayloadInfo> List(int pid)
    {
        using var target = TargetProcess.Open(pid);
        return RecordStore.ReadRecord(target).Payloads;
    }

    /// <summary>The payloads recorded in the target, oldest first.</summary>
    public IReadOnlyList<AppliedPayloadInfo> List() => RecordStore.ReadRecord(_session.Target).Payloads;

    /// <summary>
    /// The action a livepatch run left unfinished in process <paramref name="pid"/> (or is doing now), with what each
    /// of its sites holds; null when there is none. Needs no ptrace.
    /// </summary>
    public static InterruptedAction? Interrupted(int pid)
    {
        using var target = TargetProcess.Open(pid);
        return Recovery.Describe(target);
    }

    /// <summary>
    /// Refuses (<see cref="LivePatchRefusal.Interrupted"/>) while an action a livepatch run left unfinished in process
    /// <paramref name="pid"/> waits for <see cref="Recover"/>: nothing else may change its code meanwhile. Needs no ptrace.
    /// </summary>
    /// <exception cref="PatchRefusedException">An action waits for recover.</exception>
    public static void RefuseWhileInterrupted(int pid)
    {
        using var target = TargetProcess.Open(pid);
        RecordStore.Read(target);
    }

    /// <summary>Loads the payload object at <paramref name="path"/>, links it into the target and redirects its functions.</summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="SymbolResolutionException">An old function is unknown or ambiguous in the target.</exception>
    /// <exception cref="PatchRefusedException">Refused: already applied, function too short, already replaced.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a function, until the timeout; or the process went away.</exception>
    public ApplyReport Apply(string path) => Apply(Payload.Load(path));

    /// <summary>Links <paramref name="payload"/> into the target and redirects its functions, in one stop of every thread.</summary>
    /// <inheritdoc cref="Apply(string)"/>
    public ApplyReport Apply(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        return Run("apply", () =>
        {
            var record = RecordStore.Read(_session.Target);
            PayloadLifecycle.Allow(PayloadAction.ApplyFile, payload.Name, record, Pid);
            return _actions.Apply(payload, record);
        });
    }

    /// <summary>
    /// Redirects the functions of the payload <paramref name="name"/>, loaded (<see cref="Load(Payload)"/>) or
    /// reverted earlier, in one stop. Refused when a payload it depends on is not applied, when a function changed
    /// since it was loaded, or when it was reverted after its writable data changed (Xen's rule: load it again).
    /// </summary>
    /// <exception cref="PatchRefusedException">Refused; the message says why and what to do.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a function, until the timeout.</exception>
    public ApplyReport ApplyLoaded(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return Run("apply", () =>
        {
            var record = RecordStore.Read(_session.Target);
            return _actions.ApplyLoaded(record, PayloadLifecycle.Allow(PayloadAction.ApplyLoaded, name, record, Pid));
        });
    }

    /// <summary>Restores the functions of the applied payload <paramref name="name"/>, in one stop of every thread.</summary>
    /// <exception cref="PatchRefusedException">No applied payload has that name, or another was applied after it.</exception>
    /// <exception cref="TargetException">Threads did not stop until the timeout, or the process went away.</exception>
    public RevertReport Revert(string name)
    {
        return Run("revert", () =>
        {
            var record = RecordStore.Read(_session.Target);
            return _actions.Revert(record, PayloadLifecycle.Allow(PayloadAction.Revert, name, record, Pid));
        });
    }

    /// <summary>
    /// Uploads and links the payload at <paramref name="path"/> into the target and makes every check, without
    /// redirecting anything: it is recorded as loaded; <see cref="ApplyLoaded"/> redirects its functions later.
    /// </summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="PatchRefusedException">Refused: name in use, build-id, code changed, denied, too short.</exception>
    public LoadReport Load(string path) => Load(Payload.Load(path));

    /// <inheritdoc cref="Load(string)"/>
    public LoadReport Load(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        return Run("load", () =>
        {
            var record = RecordStore.Read(_session.Target);
            PayloadLifecycle.Allow(PayloadAction.Load, payload.Name, record, Pid);
            return _actions.Load(payload, record);
        });
    }

    /// <summary>
    /// Makes every check <see cref="Apply(Payload)"/> makes — the object, its symbols and relocations (linked at
    /// the addresses apply would map the blocks at now, nothing mapped), the build-ids, the bytes at every old function against its
    /// file, the deny list, its dependencies — and writes nothing to the target.
    /// </summary>
    /// <exception cref="PayloadException">The object is malformed, or a symbol or relocation cannot be linked.</exception>
    /// <exception cref="PatchRefusedException">A check fails; the message names it.</exception>
    public IReadOnlyList<CheckResult> Check(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        return Run("check", () =>
        {
            var record = RecordStore.Read(_session.Target);
            PayloadLifecycle.Allow(PayloadAction.Load, payload.Name, record, Pid);
            return _actions.Check(payload, record);
        });
    }

    /// <summary>
    /// Reverts every applied payload and applies <paramref name="payload"/> inside one stop: no moment where neither
    /// is active. The new payload is planned against the functions' original code (as in their files).
    /// </summary>
    /// <exception cref="PatchRefusedException">Refused: name in use, a dependency, build-id, code changed, denied.</exception>
    /// <exception cref="TargetException">Threads did not stop, or stayed inside a changed function, until the timeout.</exception>
    public ReplaceReport Replace(Payload payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        return Run("replace", () =>
        {
            var record = RecordStore.Read(_session.Target);
            PayloadLifecycle.Allow(PayloadAction.Replace, payload.Name, record, Pid);
            return _actions.Replace(payload, record);
        });
    }

    /// <summary>
    /// Frees the memory of a loaded or reverted payload and removes it from the record, once no thread runs its code
    /// or has it on its stack (checked with every thread stopped; retried until the timeout).
    /// </summary>
    /// <exception cref="PatchRefusedException">No such payload, or it is applied (revert it first).</exception>
    /// <exception cref="TargetException">A thread kept its code active until the timeout.</exception>
    public UnloadReport Unload(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return Run("unload", () =>
        {
            var record = RecordStore.Read(_session.Target);
            return _actions.Unload(record, PayloadLifecycle.Allow(PayloadAction.Unload, name, record, Pid));
        });
    }

    /// <summary>
    /// Ends the action a livepatch run left unfinished in the target (it died between recording its intent and its
    /// final record). Every site is read: all new, the action is completed (the record it would have written); all
    /// old, it is rolled back (the record as before, and memory mapped for a payload loaded for it freed); a mix, it
    /// is rolled back too: the new sites are written back to old in one stop, the payload's memory stays and it is
    /// recorded as reverted (its code may have run). An unload is completed once any of its blocks is gone.
    /// A recover that dies in turn is finished by the next one, the same way.
    /// </summary>
    /// <exception cref="PatchRefusedException">A site holds neither its old nor its new bytes (another tool changed it): nothing is written.</exception>
    /// <exception cref="TargetException">Threads did not stop, or one stayed inside a site, until the timeout; or the process went away.</exception>
    public RecoverReport Recover() => Run("recover", () => new Recovery(_session, _actions.Memory).Recover());

    /// <summary>
    /// Forgets the action a livepatch run left unfinished without writing any code: the record says what it said
    /// before, and a payload loaded for the action is recorded as reverted (its memory stays; unload frees it). For
    /// when <see cref="Recover"/> refuses because another tool changed a site, once the operator has put it right.
    /// An unload is recovered as <see cref="Recover"/> does (its blocks may be gone already).
    /// </summary>
    public RecoverReport AbandonInterrupted() => Run("recover", () => new Recovery(_session, _actions.Memory).Abandon());

    // Should the process end during the action, that is what the error says (TargetError.Exited), whatever then failed.
    private T Run<T>(string action, Func<T> work) => _session.Process.ReportingExit(action, work);

    /// <summary>Detaches from every thread of the target, when this patcher attached.</summary>
    public void Dispose()
    {
        if (_ownsProcess)
            _session.Process.Dispose();
    }
}
