using System.Buffers.Binary;
using LivePatch.Elf;

namespace LivePatch.Targets;

/// <summary>What a slot of the process holds for a GNU indirect function (IFUNC).</summary>
internal enum IfuncSlotState
{
    /// <summary>ld.so wrote the address its resolver returned: the implementation this module calls.</summary>
    Resolved,
    /// <summary>A lazily bound PLT slot not called yet: it still points into its module's <c>.plt</c>.</summary>
    Lazy,
    /// <summary>Zero or the resolver itself: nothing was chosen through this slot.</summary>
    Unset,
}

/// <summary>
/// One slot through which a module reaches an IFUNC: a GOT entry (<c>R_X86_64_JUMP_SLOT</c>, <c>R_X86_64_GLOB_DAT</c>)
/// naming it, or an <c>R_X86_64_IRELATIVE</c> slot of its own module whose addend is its resolver.
/// </summary>
/// <param name="Module">The module the slot belongs to.</param>
/// <param name="Address">The slot's address in the process.</param>
/// <param name="Kind">The relocation that filled it.</param>
/// <param name="Value">The 8 bytes it holds now.</param>
/// <param name="State">Whether that value is an implementation.</param>
internal readonly record struct IfuncSlot(TargetModule Module, ulong Address, ElfRelocationType Kind, ulong Value, IfuncSlotState State)
{
    /// <summary>How messages name the slot: <c>app's JUMP_SLOT slot 0x...</c>.</summary>
    public override string ToString() => $"{Module.Name}'s {KindName} slot 0x{Address:x}";

    private string KindName => Kind switch
    {
        ElfRelocationType.JumpSlot => "JUMP_SLOT",
        ElfRelocationType.GlobalData => "GLOB_DAT",
        _ => "IRELATIVE",
    };
}

/// <summary>Every slot of the process through which code reaches one IFUNC, as the process holds them now.</summary>
/// <param name="Ifunc">The IFUNC symbol (its address is its resolver).</param>
/// <param name="Slots">Its slots, resolved or not.</param>
internal sealed record IfuncBinding(TargetSymbol Ifunc, IReadOnlyList<IfuncSlot> Slots)
{
    /// <summary>The distinct values of the resolved slots: the implementations the process calls.</summary>
    public IReadOnlyList<ulong> Implementations => [.. Slots.Where(s => s.State == IfuncSlotState.Resolved).Select(s => s.Value).Distinct()];

    /// <summary>The resolved slots holding <paramref name="implementation"/>.</summary>
    public IEnumerable<IfuncSlot> SlotsHolding(ulong implementation) => Slots.Where(s => s.State == IfuncSlotState.Resolved && s.Value == implementation);
}

/// <summary>
/// Finds what a process's ld.so chose for its GNU indirect functions, from the slots it filled, without running a
/// resolver: reads relocations of every module and the slots in the process. Names the chosen code from the module's
/// symbols, or from its separate debug file (<see cref="TargetModule.DebugSymbols"/>) when the module is stripped.
/// </summary>
internal sealed class IndirectFunctions(TargetProcess target)
{

    /// <summary>
    /// The slots of <paramref name="ifunc"/>: GOT entries naming it in every module (except those bound to another
    /// definition of the name: an interposer, or an old version such as <c>memcpy@GLIBC_2.2.5</c>), and the
    /// IRELATIVE slots of its module whose addend is its resolver.
    /// </summary>
    public IfuncBinding Bind(TargetSymbol ifunc)
    {
        var modules = target.Modules;
        var otherDefinitions = modules.SelectMany(m => m.Symbols).Where(s => s.Name == ifunc.Name && s.Address != ifunc.Address).Select(s => s.Address).ToHashSet();
        var resolverInFile = ifunc.Address - ifunc.Module.LoadBias;
        var slots = new List<IfuncSlot>();
        Span<byte> bytes = stackalloc byte[8];
        foreach (var module in modules)
        {
            foreach (var relocation in module.Elf.RelocationSections.SelectMany(r => r.Relocations))
            {
                var named = relocation.Type is ElfRelocationType.JumpSlot or ElfRelocationType.GlobalData && relocation.SymbolName == ifunc.Name;
                var irelative = relocation.Type == ElfRelocationType.IRelative && ReferenceEquals(module, ifunc.Module) && (ulong)relocation.Addend == resolverInFile;
                if (!named && !irelative)
                    continue;
                var address = relocation.Offset + module.LoadBias;
                if (!target.TryReadMemory(address, bytes))
                    continue;
                var value = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
                if (named && otherDefinitions.Contains(value))
                    continue;
                slots.Add(new IfuncSlot(module, address, relocation.Type, value, StateOf(module, ifunc, value)));
            }
        }
        return new IfuncBinding(ifunc, slots);
    }

    /// <summary>
    /// The IFUNCs other than <paramref name="ifunc"/> (another resolver) whose resolved slots hold
    /// <paramref name="implementation"/>: a jump at its entry would replace them too (glibc's memcpy and memmove).
    /// </summary>
    public IReadOnlyList<TargetSymbol> OthersResolvedTo(TargetSymbol ifunc, ulong implementation) =>
        [.. target.Modules.SelectMany(m => m.Symbols)
            .Where(s => s.Type == ElfSymbolType.GnuIndirectFunction && s.Address != ifunc.Address && !s.IsNonDefaultVersion)
            .DistinctBy(s => s.Address)
            .Where(s => Bind(s).SlotsHolding(implementation).Any())];

    /// <summary>
    /// The function at <paramref name="address"/> (an implementation a slot holds), named from its module's symbols or
    /// its separate debug file, or after its module and offset (<c>libc.so.6+0x1a2b30</c>) when neither names it;
    /// null when no module maps the address (the vDSO, say).
    /// </summary>
    public TargetSymbol? FunctionAt(ulong address)
    {
        var module = target.Modules.FirstOrDefault(m => m.Regions.Any(r => r.Contains(address)));
        if (module is null)
            return null;
        var known = module.Symbols.Where(s => s.Address == address && s.Type == ElfSymbolType.Function)
            .OrderByDescending(s => s.Binding != ElfSymbolBinding.Local).FirstOrDefault();
        if (known is not null)
            return known;
        var fileAddress = address - module.LoadBias;
        var debug = module.DebugSymbols.Where(s => s.Address == address && s.Type == ElfSymbolType.Function)
            .OrderByDescending(s => s.Size != 0).ThenByDescending(s => s.Binding != ElfSymbolBinding.Local).FirstOrDefault();
        return debug is not null
            ? debug
            : new TargetSymbol(module, $"{module.Name}+0x{fileAddress:x}", address, 0, ElfSymbolType.Function, ElfSymbolBinding.Local, IsDynamic: false, IsNonDefaultVersion: false);
    }

    // Zero or the resolver: unset. Inside the slot's own module's .plt sections: lazy, not called yet. Else resolved.
    private static IfuncSlotState StateOf(TargetModule module, TargetSymbol ifunc, ulong value)
    {
        if (value == 0 || value == ifunc.Address)
            return IfuncSlotState.Unset;
        var inFile = value - module.LoadBias;
        var inPlt = module.Elf.Sections.Any(s => s.Name.StartsWith(".plt", StringComparison.Ordinal) && inFile >= s.Address && inFile - s.Address < s.Size);
        return inPlt ? IfuncSlotState.Lazy : IfuncSlotState.Resolved;
    }
}
