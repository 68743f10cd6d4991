using LivePatch.Elf.ElfInternal;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// The record lives in the target's memory, so the target — buggy or compromised — can forge it, and livepatch runs
/// as root: before any action believes a record, every address, byte and block it names is checked against what
/// livepatch sees for itself. A site must lie in executable code of the module its function names; the bytes it
/// restores must be that module's file bytes (or the jump of another recorded payload: stacking); the jump it holds or
/// writes must be the one livepatch computes, to memory of the same payload; that memory must be anonymous mappings
/// (never a module, the stack or the heap's file), and hooks and data must lie in it. A record that fails is refused
/// (<see cref="LivePatchRefusal.RecordInvalid"/>, exit 4) with the one check it failed; strings from it reach messages
/// with control characters escaped.
/// </summary>
internal static class RecordCheck
{
    private const int JumpLength = 5;
    private const int MaxSiteBytes = 32;
    private const ulong MaxBlockSize = 1UL << 30;

    /// <summary>Throws when <paramref name="record"/> names anything livepatch would not have written there itself.</summary>
    /// <exception cref="PatchRefusedException">The first check that fails (<see cref="LivePatchRefusal.RecordInvalid"/>).</exception>
    public static void Verify(TargetProcess target, TargetRecord record)
    {
        if (record.Payloads.Count == 0 && record.Intent is null)
            return;
        if (record.Payloads is null || record.Payloads.Any(p => p is null)
            || record.Intent is { } pending && (pending.Payloads is null || pending.Sites is null || pending.After is null || pending.Mapped is null || pending.Unmaps is null
                || pending.Sites.Any(s => s is null || s.Function is null || s.OldBytes is null || s.NewBytes is null)))
            throw Invalid(target, "it lacks a field livepatch always writes");
        foreach (var payload in record.Payloads.Concat(record.Intent?.After ?? []))
            RequireComplete(target, payload);
        var map = target.ReadMemoryMap();
        var all = record.Payloads.Concat(record.Intent?.After ?? []).ToList();
        var jumps = all.SelectMany(p => p.Functions).Select(f => (f.PatchAddress, f.PatchBytes)).ToList();
        // An interrupted unload may have unmapped some of the blocks it names already.
        var unmapping = record.Intent?.Unmaps ?? [];
        foreach (var payload in record.Payloads)
            VerifyPayload(target, map, payload, jumps, block => !unmapping.Contains(block));
        if (record.Intent is not { } intent)
            return;
        foreach (var name in intent.Payloads)
            if (name is null || PrintableText.HasControl(name))
                throw Invalid(target, $"the interrupted action names payload '{Text(name)}', which holds control characters");
        var pendingBlocks = intent.Mapped.Concat(intent.Unmaps).ToList();
        foreach (var block in pendingBlocks)
            VerifyBlock(target, map, $"the interrupted {Text(intent.Describe())}", block, mustBeMapped: false);
        foreach (var payload in intent.After)
            VerifyPayload(target, map, payload, jumps, _ => false);
        var blocks = all.SelectMany(p => p.Memory).Concat(pendingBlocks).ToList();
        foreach (var site in intent.Sites)
        {
            var where = $"the interrupted {Text(intent.Describe())}, site {Text(site.Function)} at 0x{site.Address:x}";
            if (site.OldBytes.Length != site.NewBytes.Length || site.OldBytes.Length is 0 or > MaxSiteBytes
                || site.OldGuard is < 0 or > MaxSiteBytes || site.NewGuard is < 0 or > MaxSiteBytes)
                throw Invalid(target, $"{where}: its old and new bytes ({site.OldBytes.Length} and {site.NewBytes.Length}) or guards are not what livepatch writes");
            var module = CodeModule(target, map, where, site.Function, site.Address, site.OldBytes.Length);
            foreach (var (bytes, which) in new[] { (site.OldBytes, "old"), (site.NewBytes, "new") })
            {
                if (FileBytesAt(module, site.Address, bytes.Length) is { } file && file.AsSpan().SequenceEqual(bytes))
                    continue;
                if (jumps.Any(j => j.PatchAddress == site.Address && j.PatchBytes.AsSpan().SequenceEqual(bytes)))
                    continue;
                if (JumpTarget(site.Address, bytes) is { } to && blocks.Any(b => Holds(b, to)))
                    continue;
                throw Invalid(target, $"{where}: its {which} bytes {Convert.ToHexStringLower(bytes)} are neither {module.Name}'s own bytes there nor a jump into memory of a recorded payload");
            }
        }
    }

    /// <summary><paramref name="text"/> with control characters written as <c>\xNN</c>: record strings may hold terminal escapes.</summary>
    public static string Text(string? text) => text is null ? "" : PrintableText.EscapeAsBytes(text);

    // What JSON left null where livepatch always writes something.
    private static void RequireComplete(TargetProcess target, AppliedPayloadInfo? payload)
    {
        if (payload is null || payload.Name is null || payload.File is null || payload.Functions is null || payload.Memory is null || payload.Hooks is null
            || payload.Depends is null || payload.BuildIds is null
            || payload.Functions.Any(f => f is null || f.Name is null || f.NewSymbol is null || f.OriginalBytes is null || f.PatchBytes is null)
            || payload.Memory.Any(b => b is null || b.Use is null) || payload.Hooks.Any(h => h is null || h.Symbol is null))
            throw Invalid(target, $"payload '{Text(payload?.Name)}' lacks a field livepatch always writes");
    }

    private static void VerifyPayload(TargetProcess target, MemoryMap map, AppliedPayloadInfo payload, List<(ulong PatchAddress, byte[] PatchBytes)> jumps, Func<MappedBlock, bool> mustBeMapped)
    {
        var name = $"payload '{Text(payload.Name)}'";
        foreach (var text in new[] { payload.Name, payload.File }.Concat(payload.Functions.SelectMany(f => new[] { f.Name, f.NewSymbol })).Concat(payload.Hooks.Select(h => h.Symbol)))
            if (text is null || PrintableText.HasControl(text))
                throw Invalid(target, $"{name}: the name '{Text(text)}' holds control characters");
        if (payload.Memory.Count == 0)
            throw Invalid(target, $"{name}: it names no memory of its own");
        foreach (var block in payload.Memory)
            VerifyBlock(target, map, name, block, mustBeMapped(block));
        foreach (var function in payload.Functions)
        {
            var where = $"{name}, {Text(function.Name)} at 0x{function.PatchAddress:x}";
            if (function.OriginalBytes.Length != JumpLength || function.PatchBytes.Length != JumpLength
                || function.DisplacedBytes is { Length: < JumpLength or > MaxSiteBytes })
                throw Invalid(target, $"{where}: its bytes are not a {JumpLength}-byte jump site");
            var module = CodeModule(target, map, where, function.Name, function.PatchAddress, function.DisplacedBytes?.Length ?? JumpLength);
            var file = FileBytesAt(module, function.PatchAddress, JumpLength);
            if (!(file is not null && file.AsSpan().SequenceEqual(function.OriginalBytes))
                && !jumps.Any(j => j.PatchAddress == function.PatchAddress && !ReferenceEquals(j.PatchBytes, function.PatchBytes) && j.PatchBytes.AsSpan().SequenceEqual(function.OriginalBytes)))
                throw Invalid(target, $"{where}: the bytes it would restore ({Convert.ToHexStringLower(function.OriginalBytes)}) are neither {module.Name}'s own nor another recorded payload's jump");
            var expected = function.Thunk != 0 ? function.Thunk : function.NewAddress;
            if (JumpTarget(function.PatchAddress, function.PatchBytes) != expected || !payload.Memory.Any(b => Holds(b, expected)))
                throw Invalid(target, $"{where}: its jump {Convert.ToHexStringLower(function.PatchBytes)} is not the jump to its new code in the payload's own memory");
            foreach (var (address, what) in new[] { (function.NewAddress, "new function"), (function.Trampoline, "trampoline") })
                if (address != 0 && !payload.Memory.Any(b => Holds(b, address)))
                    throw Invalid(target, $"{where}: its {what} at 0x{address:x} is outside the payload's memory");
        }
        foreach (var hook in payload.Hooks)
            if (!payload.Memory.Any(b => b.Use == "text" && Holds(b, hook.Address)))
                throw Invalid(target, $"{name}: its hook {Text(hook.Symbol)} at 0x{hook.Address:x} is outside the payload's code");
        if (payload.DataLength < 0 || payload.DataLength > 0 && !payload.Memory.Any(b => Holds(b, payload.DataAddress) && payload.DataAddress + (ulong)payload.DataLength <= b.Address + b.Size))
            throw Invalid(target, $"{name}: its data at 0x{payload.DataAddress:x} ({payload.DataLength} bytes) is outside the payload's memory");
    }

    // A block livepatch mapped: page-aligned, of sane size, and (when mapped) anonymous memory that no module, stack
    // or file backs, from its first to its last page.
    private static void VerifyBlock(TargetProcess target, MemoryMap map, string owner, MappedBlock block, bool mustBeMapped)
    {
        var where = $"{owner}: its {Text(block.Use)} block at 0x{block.Address:x} ({block.Size} bytes)";
        if ((block.Address & 0xfff) != 0 || (block.Size & 0xfff) != 0 || block.Size is 0 or > MaxBlockSize || block.Address + block.Size < block.Address)
            throw Invalid(target, $"{where} is not page-aligned memory of a sane size");
        for (var page = block.Address; page < block.Address + block.Size; page += 0x1000)
        {
            if (map.Find(page) is not { } region)
            {
                if (mustBeMapped)
                    throw Invalid(target, $"{where} is not mapped");
                continue;
            }
            if (region.Inode != 0 || region.Path.Length > 0 || region.IsShared)
                throw Invalid(target, $"{where} is {(region.Path.Length > 0 ? Text(region.Path) : "shared memory")}, not memory livepatch maps");
            if (ExpectedProtection(block.Use) is not { } expected || region.Protection != expected)
                throw Invalid(target, $"{where} is mapped {region.Protection}, not as livepatch maps {Text(block.Use)} memory");
        }
    }

    // How PayloadMemory maps each kind of block; anything else is no block of livepatch's.
    private static MemoryProtection? ExpectedProtection(string use) => use switch
    {
        "text" or "trampolines" => MemoryProtection.Read | MemoryProtection.Execute,
        "rodata" => MemoryProtection.Read,
        "data" => MemoryProtection.Read | MemoryProtection.Write,
        _ => null,
    };

    // The module whose executable code holds [address, address + length), which the function's name must name.
    private static TargetModule CodeModule(TargetProcess target, MemoryMap map, string where, string function, ulong address, int length)
    {
        var module = target.Modules.FirstOrDefault(m => m.Regions.Any(r => r.Contains(address)));
        var region = map.Find(address);
        if (module is null || region is not { } code || (code.Protection & MemoryProtection.Execute) == 0 || address + (ulong)length > code.End)
            throw Invalid(target, $"{where}: 0x{address:x} is not in the executable code of a module");
        var named = function.Split('!', 2)[0];
        if (named == function)
            named = function.Split("+0x", 2)[0];
        if (!module.Matches(named))
            throw Invalid(target, $"{where}: 0x{address:x} is in {module.Name}, not in the module its name says ('{Text(named)}')");
        return module;
    }

    private static byte[]? FileBytesAt(TargetModule module, ulong address, int length)
    {
        var bytes = module.Elf.ReadLoaded(address - module.LoadBias, length, executableOnly: true);
        return bytes.Length == length ? bytes.ToArray() : null;
    }

    // Where a 5-byte `jmp rel32` at `address` goes; null for anything else.
    private static ulong? JumpTarget(ulong address, byte[] bytes) =>
        bytes.Length == JumpLength && Branch.TryReadJump(bytes, address, out var target) ? target : null;

    private static bool Holds(MappedBlock block, ulong address) => address >= block.Address && address < block.Address + block.Size;

    private static PatchRefusedException Invalid(TargetProcess target, string check) =>
        new(LivePatchRefusal.RecordInvalid, $"process {target.Pid}: the livepatch record fails a check, so nothing it says is acted on: {check}");
}
