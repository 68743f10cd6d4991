using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// One old function as planned before anything is written: where its jump goes, the bytes there now, the whole
/// instructions the jump displaces, the payload it stacks on (null when its entry holds its file's code), and the
/// branch of its code back into the jump's bytes, if it has one (then it gets no trampoline and every thread must be
/// out of it while the jump is written).
/// </summary>
internal sealed record PlannedEntry(PayloadFunction Function, TargetSymbol Symbol, ulong PatchAddress, byte[] Original, byte[] Displaced, string? StackedOn,
    BranchIntoEntry? LoopsBack = null)
{
    /// <summary>When the payload named a GNU indirect function: it and the implementation <see cref="Symbol"/> the process uses.</summary>
    public IfuncUse? Ifunc { get; init; }

    /// <summary><c>module!name</c> (<c>module!name (ifunc: implementation)</c> through an IFUNC), for messages and the record.</summary>
    public string Name => Ifunc?.Name ?? Symbol.QualifiedName;
}

/// <summary>
/// Plans the entries of a payload's old functions: finds each, checks that a 5-byte jump fits and that it is not
/// denied, and that its entry holds what its file has (or the jump of the payload on top, which the new one then
/// stacks on); checks the build-ids the payload asks for; resolves the symbols the payload uses.
/// </summary>
internal sealed class EntryPlanner(LiveSession session)
{
    private readonly IfuncPlanner _ifuncs = new(session);

    /// <summary>The jump written at each old function's entry.</summary>
    public const int JumpLength = Branch.Rel32Length;

    private int Pid => session.Pid;

    /// <summary>
    /// Plans <paramref name="function"/>. With <paramref name="fromOriginal"/> (replace) the entry is planned from the
    /// file's bytes, as every payload is reverted in the same stop.
    /// </summary>
    /// <exception cref="PatchRefusedException">Not a function, denied, too short, or its entry was changed by another tool.</exception>
    public PlannedEntry Plan(PayloadFunction function, IReadOnlyList<AppliedPayloadInfo> record, bool fromOriginal)
    {
        var spec = function.OldModule is null ? function.OldName : $"{function.OldModule}!{function.OldName}";
        var symbol = session.Target.ResolveSymbol(spec);
        if (!symbol.IsFunction)
            throw new PatchRefusedException(LivePatchRefusal.NotAFunction, $"'{spec}' in process {Pid} is not a function ({symbol})");
        RefuseDenied(symbol);
        var ifunc = symbol.Type == Elf.ElfSymbolType.GnuIndirectFunction ? _ifuncs.ForReplace(symbol, spec) : null;
        if (ifunc is not null)
        {
            symbol = ifunc.Implementation!;
            RefuseDenied(symbol);
        }
        var code = ReadAvailable(symbol.Address, 64);
        var file = symbol.Module.Elf.ReadLoaded(symbol.Address - symbol.Module.LoadBias, code.Length).ToArray();
        if (file.Length == 0)
            throw new PatchRefusedException(LivePatchRefusal.NotAFunction, $"0x{symbol.Address:x} in process {Pid} is not in the file data of {symbol.Module.Name}");
        var limit = Math.Min(file.Length, symbol.Size == 0 ? code.Length : (int)Math.Min((ulong)code.Length, symbol.Size));
        var offset = InstructionBoundaries.PatchableEntryOffset(file);
        if (symbol.Size != 0 && (ulong)(offset + JumpLength) > symbol.Size)
            throw TooShort(symbol, $"it is {symbol.Size} bytes long");
        CoveredInstructions covered;
        try
        {
            covered = InstructionBoundaries.Cover(file.AsSpan(offset, limit - offset), symbol.Address + (ulong)offset, JumpLength);
        }
        catch (InvalidInstructionException error)
        {
            throw TooShort(symbol, error.Message);
        }
        if (covered.FlowEndOffset is { } end)
            throw TooShort(symbol, $"its code ends after {offset + end} bytes");
        var patchAddress = symbol.Address + (ulong)offset;
        var entry = code.AsSpan(offset, covered.Length);
        var top = record.LastOrDefault(p => p.State == PayloadState.Applied && p.Functions.Any(f => f.PatchAddress == patchAddress));
        var topJump = top?.Functions.First(f => f.PatchAddress == patchAddress).PatchBytes;
        var stacked = topJump is not null && entry[..JumpLength].SequenceEqual(topJump);
        var original = file.AsSpan(offset, covered.Length);
        if (!stacked && !entry.SequenceEqual(original))
            throw new PatchRefusedException(LivePatchRefusal.CodeChanged,
                $"{symbol.QualifiedName} in process {Pid} holds {Convert.ToHexStringLower(entry)} at its entry 0x{patchAddress:x}, not the {Convert.ToHexStringLower(original)} of its file{(top is null ? "" : $" nor the jump of payload '{top.Name}'")}: another tool changed it; refusing to patch over it");
        if (fromOriginal || !stacked)
            return new PlannedEntry(function, symbol, patchAddress, original[..JumpLength].ToArray(), original.ToArray(), null,
                BranchIntoEntry.Find(session.Target, symbol, patchAddress)) { Ifunc = ifunc };
        // On top of another payload: the jump is what the new one replaces (and what its original calls).
        return new PlannedEntry(function, symbol, patchAddress, entry[..JumpLength].ToArray(), entry[..JumpLength].ToArray(), top!.Name) { Ifunc = ifunc };
    }

    /// <summary>The build-ids <paramref name="payload"/> asks for against the process's modules (with --force, a mismatch is recorded, not refused).</summary>
    /// <exception cref="PatchRefusedException">A module's build-id differs and the action is not forced.</exception>
    public List<BuildIdCheck> CheckBuildIds(Payload payload)
    {
        var checks = new List<BuildIdCheck>();
        foreach (var wanted in payload.TargetBuildIds)
        {
            var modules = session.Target.ModulesNamed(wanted.Module);
            var actual = modules[0].BuildId?.ToLowerInvariant() ?? "none";
            if (actual != wanted.BuildId && !session.Options.Force)
                throw new PatchRefusedException(LivePatchRefusal.BuildIdMismatch,
                    $"payload '{payload.Name}' was built for {wanted.Module} with build-id {wanted.BuildId}; process {Pid} runs {modules[0].Path} with build-id {actual} (--force applies it anyway)");
            checks.Add(new BuildIdCheck(wanted.Module, wanted.BuildId, actual, actual != wanted.BuildId));
        }
        return checks;
    }

    /// <summary>
    /// Resolves a payload's undefined symbol: first in the modules whose functions it replaces (static symbols
    /// included, as the replaced code saw them), then among global symbols, the main program's first. A GNU indirect
    /// function resolves to the implementation the process uses (<see cref="IfuncPlanner"/>), told to <paramref name="throughIfunc"/>.
    /// </summary>
    /// <exception cref="SymbolResolutionException">The name is ambiguous.</exception>
    /// <exception cref="PatchRefusedException">An IFUNC the process has not resolved, or whose slots disagree.</exception>
    public ulong? ResolveForPayload(string name, IReadOnlyList<PlannedEntry> entries, Action<IfuncUse>? throughIfunc = null)
    {
        var patched = entries.Select(e => e.Symbol.Module).Distinct().ToList();
        var local = TargetProcess.Candidates(patched, name);
        if (local.Count == 1)
            return Callable(local[0], name, throughIfunc);
        if (local.Count > 1)
            throw new SymbolResolutionException(name, local,
                $"symbol '{name}' used by the payload is ambiguous in process {Pid}: {string.Join(", ", local)}");
        var global = TargetProcess.Candidates(session.Target.Modules, name).Where(s => s.Binding != Elf.ElfSymbolBinding.Local).ToList();
        if (global.Count == 1)
            return Callable(global[0], name, throughIfunc);
        if (global.FirstOrDefault(s => s.Module.IsMainExecutable) is { } fromMain)
            return Callable(fromMain, name, throughIfunc);
        if (global.Count > 1)
            throw new SymbolResolutionException(name, global,
                $"symbol '{name}' used by the payload is defined by several libraries in process {Pid}: {string.Join(", ", global)}");
        return null;
    }

    // An IFUNC's address is its resolver's: a payload calls the implementation the process already chose.
    private ulong Callable(TargetSymbol symbol, string name, Action<IfuncUse>? throughIfunc)
    {
        if (symbol.Type != Elf.ElfSymbolType.GnuIndirectFunction)
            return symbol.Address;
        var use = _ifuncs.ForCall(symbol, name);
        throughIfunc?.Invoke(use);
        return use.Address;
    }

    /// <summary>Functions livepatch itself makes the target run (its system calls), and the user's deny list.</summary>
    private void RefuseDenied(TargetSymbol symbol)
    {
        var name = symbol.QualifiedName;
        if (session.Options.Deny.Any(d => d == symbol.Name || d == name))
            throw new PatchRefusedException(LivePatchRefusal.Denied, $"{name} in process {Pid} is on the deny list; refusing to patch it");
        var syscall = session.Process.SyscallInstruction;
        if (syscall >= symbol.Address && syscall < symbol.Address + Math.Max(symbol.Size, 1))
            throw new PatchRefusedException(LivePatchRefusal.Denied,
                $"{name} in process {Pid} holds the system call instruction livepatch makes the target execute (0x{syscall:x}); refusing to patch it");
    }

    private PatchRefusedException TooShort(TargetSymbol symbol, string why) =>
        new(LivePatchRefusal.FunctionTooShort, $"function {symbol.QualifiedName} in process {Pid} is too short for a {JumpLength}-byte jump: {why}");

    // The function may sit at the very end of its mapping: read what is mapped, up to count bytes.
    private byte[] ReadAvailable(ulong address, int count)
    {
        var region = session.Target.ReadMemoryMap().Find(address);
        return session.Target.ReadMemory(address, region is { } mapped ? (int)Math.Min((ulong)count, mapped.End - address) : count);
    }
}
