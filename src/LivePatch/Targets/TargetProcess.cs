using LivePatch.Elf;

namespace LivePatch.Targets;

/// <summary>
/// A running process whose code LivePatch reads and changes: its memory map, modules, symbols and threads.
/// Opening one does not trace or stop it; operations that need ptrace attach for their own duration.
/// </summary>
public sealed class TargetProcess : IDisposable
{
    private readonly ProcessMemory _memory;
    private IReadOnlyList<TargetModule>? _modules;

    private TargetProcess(int pid, IReadOnlyList<string> debugDirectories)
    {
        Pid = pid;
        DebugDirectories = debugDirectories;
        _memory = new ProcessMemory(pid);
    }

    /// <summary>The process id.</summary>
    public int Pid { get; }

    private static string? StatusField(string status, string field) => ProcStatus.Field(status.Split('\n'), field);

    /// <summary>
    /// Where separate debug files of stripped modules are looked for by build-id and <c>.gnu_debuglink</c>, in this
    /// order: the directories given when it was opened, <c>LIVEPATCH_DEBUG_DIR</c>'s, <c>/usr/lib/debug</c>.
    /// </summary>
    public IReadOnlyList<string> DebugDirectories { get; private set; }

    /// <summary>The process's memory, through <c>/proc/PID/mem</c>.</summary>
    internal ProcessMemory Memory => _memory;

    /// <summary>
    /// Opens process <paramref name="pid"/> for reading and patching; the debug files of its stripped modules are looked
    /// for in <paramref name="debugDirectories"/> first (see <see cref="DebugDirectories"/>).
    /// </summary>
    /// <exception cref="TargetException">No such process, no permission, or it is not an x86-64 ELF process.</exception>
    /// <exception cref="DebugDirectoryNotFoundException">A directory of <paramref name="debugDirectories"/> does not exist.</exception>
    public static TargetProcess Open(int pid, IReadOnlyList<string>? debugDirectories = null)
    {
        var directories = DebugFiles.Directories(debugDirectories ?? []);
        if (pid <= 0)
            throw TargetException.NotFound(pid);
        var status = TargetFiles.ReadAllText(pid, "status");
        if (status.Contains("State:\tZ", StringComparison.Ordinal))
            throw new TargetException(TargetError.Exited, pid, $"process {pid} has exited (it is a zombie)");
        // Kernel threads have no user memory: their status lists no VmSize.
        if (!status.Contains("\nVmSize:", StringComparison.Ordinal))
            throw new TargetException(TargetError.PermissionDenied, pid, $"process {pid} ({StatusField(status, "Name:")}) is a kernel thread: it has no user code to patch");
        if (StatusField(status, "Tgid:") is { } tgid && tgid != pid.ToString(System.Globalization.CultureInfo.InvariantCulture))
            throw new TargetException(TargetError.NotFound, pid, $"{pid} is a thread of process {tgid}, not a process: give {tgid}");
        var target = new TargetProcess(pid, directories);
        try
        {
            var main = target.MainModule;
            if (main.Elf.Machine != ElfMachine.X64)
                throw new TargetException(TargetError.PermissionDenied, pid, $"process {pid} ({main.Name}) is not an x86-64 program");
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    /// <summary>The process's mappings, read now.</summary>
    public MemoryMap ReadMemoryMap() => MemoryMap.Read(Pid);

    /// <summary>The executable and shared libraries mapped now (file mappings with executable code).</summary>
    public IReadOnlyList<TargetModule> Modules => _modules ??= ReadModules();

    /// <summary>The main program.</summary>
    public TargetModule MainModule => Modules.FirstOrDefault(m => m.IsMainExecutable)
        ?? throw new TargetException(TargetError.SystemCallFailed, Pid, $"process {Pid}: its main executable is not mapped");

    /// <summary>Forgets the cached module list, so the next use re-reads the memory map (after dlopen, say).</summary>
    public void Refresh() => _modules = null;

    /// <summary>
    /// Looks for debug files in <paramref name="directories"/> first from now on (a caller's options given after the
    /// process was opened); modules are read again when that changes where to look.
    /// </summary>
    /// <exception cref="DebugDirectoryNotFoundException">A directory does not exist.</exception>
    internal void SearchDebugDirectoriesFirst(IReadOnlyList<string> directories)
    {
        var all = DebugFiles.Directories(directories);
        if (all.SequenceEqual(DebugDirectories, StringComparer.Ordinal))
            return;
        DebugDirectories = all;
        Refresh();
    }

    /// <summary>The ids of the process's threads, from <c>/proc/PID/task</c>.</summary>
    public IReadOnlyList<int> ThreadIds() => TargetFiles.TaskIds(Pid);

    /// <summary>Reads <paramref name="count"/> bytes of the process's memory at <paramref name="address"/>.</summary>
    /// <exception cref="TargetException">The memory is not mapped or the process is gone.</exception>
    public byte[] ReadMemory(ulong address, int count)
    {
        var bytes = new byte[count];
        _memory.Read(address, bytes);
        return bytes;
    }

    /// <summary>Reads into <paramref name="destination"/> without allocating; false when not all of it is mapped.</summary>
    internal bool TryReadMemory(ulong address, Span<byte> destination) => _memory.TryRead(address, destination);

    /// <summary>Writes into the process's memory, whatever its page protection. Code changes must go through the poker.</summary>
    internal void WriteMemory(ulong address, ReadOnlySpan<byte> bytes) => _memory.Write(address, bytes);

    /// <summary>
    /// Finds the one symbol <paramref name="spec"/> names: <c>name</c>, or <c>module!name</c> where module is a file
    /// name (<c>libz.so.1.2.13</c>), its soname (<c>libz.so.1</c>), either without its <c>.so</c> suffix (<c>libz</c>) or a path. Static symbols count
    /// when the module has a <c>.symtab</c>; old symbol versions (<c>name@VER</c>) count only when no default exists.
    /// A function without a name (a stripped binary) is <c>module+0xOFFSET</c>: OFFSET is its address in the module's
    /// file, as <c>nm</c> and <c>objdump</c> of an unstripped build show it; the symbol there (of the module's tables or,
    /// stripped, of its debug file) is returned, or an unnamed function of unknown size (<c>+0xOFFSET</c>).
    /// </summary>
    /// <exception cref="SymbolResolutionException">No symbol, or several at different addresses; the message lists them; or an offset outside the module's code.</exception>
    public TargetSymbol ResolveSymbol(string spec)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec);
        if (AtOffset(spec) is { } atOffset)
            return atOffset;
        var (moduleSpec, name) = SplitSpec(spec);
        var modules = moduleSpec is null ? Modules : ModulesNamed(moduleSpec, spec);
        var candidates = Candidates(modules, name);
        return candidates.Count switch
        {
            1 => candidates[0],
            0 => throw new SymbolResolutionException(spec, [], $"process {Pid} has no symbol '{spec}'{StrippedHint(modules)}"),
            _ => throw new SymbolResolutionException(spec, candidates,
                $"'{spec}' is ambiguous in process {Pid}: {string.Join(", ", candidates)}; name one as module!name"),
        };
    }

    /// <summary>
    /// The module <paramref name="moduleSpec"/> names (file name, soname, either without its <c>.so</c> suffix and
    /// version, or path), with its mappings of other inodes if the file was replaced while mapped.
    /// </summary>
    /// <exception cref="SymbolResolutionException">None does (the message lists the modules there are), or several do.</exception>
    internal List<TargetModule> ModulesNamed(string moduleSpec, string? forSpec = null)
    {
        var modules = Modules.Where(m => m.Matches(moduleSpec)).ToList();
        if (modules.Count == 0)
            throw new SymbolResolutionException(forSpec ?? moduleSpec, [],
                $"process {Pid} has no module '{moduleSpec}'{(forSpec is null ? "" : $" (for '{forSpec}')")}; modules: {string.Join(", ", Modules.Select(m => m.Name).Distinct())}");
        if (modules.DistinctBy(m => m.Path).Count() > 1)
            throw new SymbolResolutionException(forSpec ?? moduleSpec, [],
                $"'{moduleSpec}' names several modules in process {Pid}: {string.Join(", ", modules.Select(m => m.Path).Distinct().Order(StringComparer.Ordinal))}; name one by its file name, soname or path");
        return modules;
    }

    /// <summary>
    /// The symbols named <paramref name="name"/> in <paramref name="modules"/>, one per address, default versions first;
    /// symbols of separate debug files only when no module's own tables have the name.
    /// </summary>
    internal static List<TargetSymbol> Candidates(IEnumerable<TargetModule> modules, string name)
    {
        var all = modules.SelectMany(m => m.Symbols.Where(s => s.Name == name)).ToList();
        // A debug file gives back what stripping removed: only a name no module's own tables have is looked for there
        // (ld.so's private strlen in its debug file does not make libc's strlen ambiguous), and only then is it read.
        if (all.Count == 0)
            all = [.. modules.Where(m => m.IsStripped).SelectMany(m => m.DebugSymbols.Where(s => s.Name == name))];
        if (all.Any(s => !s.IsNonDefaultVersion))
            all.RemoveAll(s => s.IsNonDefaultVersion);
        return [.. all.DistinctBy(s => s.Address)];
    }

    // Why a name may be missing: stripped modules without a debug file, and where one was looked for.
    private static string StrippedHint(IEnumerable<TargetModule> modules)
    {
        var named = modules.DistinctBy(m => m.Path).ToList();
        var stripped = named.Where(m => m.IsStripped && (m.DebugFile is null || m.UsesMiniDebugInfo) && (named.Count == 1 || m.IsMainExecutable)).ToList();
        if (stripped.Count == 0)
            return "";
        var module = stripped[0];
        var what = module.UsesMiniDebugInfo ? $"is stripped, its MiniDebugInfo ({module.DebugFile}) does not name it" : "is stripped";
        return $" ({module.Name} {what} and no debug file of it was found: looked for {string.Join(", ", module.DebugFilesLooked.DefaultIfEmpty("none (it has neither a build-id nor a .gnu_debuglink)"))}; " +
            $"install its debug package, or put its debug file in a debug directory (--debug-dir, {DebugFiles.DirectoryVariable}); a function without a name is module+0xOFFSET)";
    }

    // module+0xOFFSET: the function at that link-time address of the module (a symbol's, or an unnamed one).
    private TargetSymbol? AtOffset(string spec)
    {
        var plus = spec.LastIndexOf("+0x", StringComparison.Ordinal);
        if (plus <= 0 || spec.Contains('!', StringComparison.Ordinal)
            || !ulong.TryParse(spec.AsSpan(plus + 3), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var offset))
            return null;
        var module = ModulesNamed(spec[..plus], spec)[0];
        var address = module.LoadBias + offset;
        if (!module.Regions.Any(r => r.Contains(address) && r.Protection.HasFlag(MemoryProtection.Execute)))
            throw new SymbolResolutionException(spec, [],
                $"'{spec}' in process {Pid} is 0x{address:x}, not in the code of {module.Name} (the offset is the address as nm shows it in the module's file)");
        // A stripped module's debug file may name (and size) it.
        var symbols = module.IsStripped ? module.Symbols.Concat(module.DebugSymbols) : module.Symbols;
        var named = symbols.Where(s => s.Address == address && s.IsFunction).OrderBy(s => s.IsNonDefaultVersion).FirstOrDefault();
        return named ?? new TargetSymbol(module, $"+0x{offset:x}", address, 0, ElfSymbolType.Function, ElfSymbolBinding.Local, false, false);
    }

    internal static (string? Module, string Name) SplitSpec(string spec)
    {
        var bang = spec.LastIndexOf('!');
        return bang < 0 ? (null, spec) : (spec[..bang], spec[(bang + 1)..]);
    }

    /// <inheritdoc />
    public void Dispose() => _memory.Dispose();

    private List<TargetModule> ReadModules()
    {
        var map = ReadMemoryMap();
        string exe;
        try
        {
            exe = File.ResolveLinkTarget($"/proc/{Pid}/exe", returnFinalTarget: false)?.FullName ?? "";
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException)
        {
            exe = "";
        }
        var modules = new List<TargetModule>();
        foreach (var group in map.Regions.Where(r => r.IsFile).GroupBy(r => (r.Path, r.Inode)))
        {
            var regions = group.OrderBy(r => r.Start).ToList();
            if (!regions.Any(r => r.Protection.HasFlag(MemoryProtection.Execute)))
                continue;
            var isMain = exe.Length > 0 && (group.Key.Path == exe || group.Key.Path == exe + " (deleted)" || exe == group.Key.Path.Replace(" (deleted)", "", StringComparison.Ordinal));
            modules.Add(new TargetModule(Pid, group.Key.Path, regions, isMain, DebugDirectories));
        }
        return modules;
    }
}

/// <summary>A symbol name that names no symbol, or several; <see cref="Candidates"/> lists the several.</summary>
public sealed class SymbolResolutionException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception.</summary>
    public SymbolResolutionException(string spec, IReadOnlyList<TargetSymbol> candidates, string message) : base(message)
    {
        Spec = spec;
        Candidates = candidates;
    }

    /// <summary>The name as it was asked for.</summary>
    public string Spec { get; }

    /// <summary>The symbols it could mean (empty when none).</summary>
    public IReadOnlyList<TargetSymbol> Candidates { get; }
}
