using LivePatch.Elf;
using LivePatch.Targets;

namespace LivePatch.Live;

/// <summary>A GNU indirect function (IFUNC) and the implementation the process uses for it, with the slots that say so.</summary>
/// <param name="Ifunc">The IFUNC symbol (its address is the resolver's).</param>
/// <param name="Address">The implementation every resolved slot holds.</param>
/// <param name="Implementation">That implementation as a function of a module; null when no module maps it (the vDSO).</param>
/// <param name="Binding">The slots read in the process.</param>
internal sealed record IfuncUse(TargetSymbol Ifunc, ulong Address, TargetSymbol? Implementation, IfuncBinding Binding)
{
    /// <summary>The IFUNC as <c>module!name</c>.</summary>
    public string IfuncName => $"{Ifunc.Module.Name}!{Ifunc.Name}";

    /// <summary>The implementation's name, or its address when no module maps it.</summary>
    public string ImplementationName => Implementation?.Name ?? $"0x{Address:x}";

    /// <summary>How records and messages name a function replaced through the IFUNC: <c>libc.so.6!strlen (ifunc: __strlen_avx2)</c>.</summary>
    public string Name => $"{IfuncName} (ifunc: {ImplementationName})";

    /// <summary>What <c>check</c> adds to the line of a function replaced through the IFUNC.</summary>
    public string EntryNote => $"; through the GNU indirect function {IfuncName}, whose implementation in the process is {ImplementationName}: {Evidence}";

    /// <summary>The line <c>check</c> gives a symbol of the payload linked through the IFUNC.</summary>
    public CheckResult LinkCheck(int pid) =>
        new($"symbol {Ifunc.Name}", $"{IfuncName} is a GNU indirect function: linked to {ImplementationName} at 0x{Address:x}, the implementation process {pid} uses; {Evidence}");

    // The slots that agree on the implementation.
    private string Evidence
    {
        get
        {
            var slots = Binding.SlotsHolding(Address).ToList();
            return $"{slots.Count} resolved slot(s) hold it: {IfuncPlanner.List(slots.Select(s => s.ToString()))}";
        }
    }
}

/// <summary>
/// GNU indirect functions met while planning a payload. ld.so ran each IFUNC's resolver once and wrote its answer in
/// the GOT and IRELATIVE slots of the process; livepatch never runs a resolver in the target, it reads those slots
/// (<see cref="IndirectFunctions"/>) and links a call, or plants a replacement's jump, on the implementation they hold.
/// </summary>
internal sealed class IfuncPlanner(LiveSession session)
{
    private readonly IndirectFunctions _functions = new(session.Target);

    private int Pid => session.Pid;

    // The IFUNC's slots in the process         | a payload calls it   | a payload replaces it
    // no slot resolved (none, lazy, zero)      | refuse: unresolved   | refuse: unresolved
    // resolved slots hold different addresses  | refuse: disagree     | refuse: disagree
    // all resolved slots hold V                | link to V            | V's entry gets the jump, unless
    //   ... V in no module (the vDSO)          |                      |   refuse: no code file to patch
    //   ... another IFUNC's slots hold V too   |                      |   refuse: it would replace that one too

    /// <summary>The implementation a payload's call to <paramref name="ifunc"/> (its symbol <paramref name="name"/>) is linked to.</summary>
    /// <exception cref="PatchRefusedException">The process has not resolved it, or its slots disagree.</exception>
    public IfuncUse ForCall(TargetSymbol ifunc, string name) =>
        Chosen(ifunc, $"symbol '{name}' used by the payload is {ifunc.Module.Name}!{ifunc.Name}, a GNU indirect function (IFUNC)");

    /// <summary>The implementation whose entry gets the jump when a payload replaces <paramref name="ifunc"/> (asked for as <paramref name="spec"/>).</summary>
    /// <exception cref="PatchRefusedException">Unresolved, disagreeing slots, outside every module, or shared with another IFUNC.</exception>
    public IfuncUse ForReplace(TargetSymbol ifunc, string spec)
    {
        var what = $"'{spec}' to replace is {ifunc.Module.Name}!{ifunc.Name}, a GNU indirect function (IFUNC)";
        var use = Chosen(ifunc, what);
        if (use.Implementation is null)
            throw Refused($"{what}; its implementation in process {Pid}, 0x{use.Address:x}, lies in no module's file (the vDSO?): there is no code of a file to patch");
        var sharing = _functions.OthersResolvedTo(ifunc, use.Address);
        if (sharing.Count > 0)
        {
            var others = List(sharing.Select(s => $"{s.Module.Name}!{s.Name}"));
            throw Refused($"{what}; its implementation in process {Pid}, {use.ImplementationName} at 0x{use.Address:x}, is also what {others} resolved to: a jump at its entry would replace {(sharing.Count == 1 ? "that one" : "those")} too; refusing");
        }
        return use;
    }

    /// <summary>
    /// The symbol of a function a payload's record names: <c>module!name</c> resolved, or for a function replaced through
    /// an IFUNC (<see cref="AppliedFunctionInfo.Ifunc"/>) the implementation at its recorded address.
    /// </summary>
    /// <exception cref="SymbolResolutionException">The name no longer resolves.</exception>
    /// <exception cref="PatchRefusedException">No module maps the recorded implementation.</exception>
    public static TargetSymbol SymbolOf(TargetProcess target, AppliedFunctionInfo function)
    {
        if (function.Ifunc is null)
            return target.ResolveSymbol(function.Name);
        return new IndirectFunctions(target).FunctionAt(function.OldAddress)
            ?? throw new PatchRefusedException(LivePatchRefusal.IndirectFunction,
                $"{function.Name} in process {target.Pid}: no module maps its implementation at 0x{function.OldAddress:x} any more");
    }

    /// <summary>Up to three items, then how many more.</summary>
    public static string List(IEnumerable<string> items)
    {
        var all = items.ToList();
        return string.Join(", ", all.Take(3)) + (all.Count > 3 ? $" and {all.Count - 3} more" : "");
    }

    private IfuncUse Chosen(TargetSymbol ifunc, string what)
    {
        if (ifunc.Type != ElfSymbolType.GnuIndirectFunction)
            throw new ArgumentException($"{ifunc} is not a GNU indirect function", nameof(ifunc));
        var binding = _functions.Bind(ifunc);
        var implementations = binding.Implementations;
        if (implementations.Count == 0)
            throw Refused($"{what} that process {Pid} has not resolved yet ({Unresolved(binding)}); livepatch never runs a resolver in the target, so it cannot tell which implementation the process would use");
        if (implementations.Count > 1)
        {
            var held = implementations.Select(v => $"{List(binding.SlotsHolding(v).Select(s => s.ToString()))} {(binding.SlotsHolding(v).Count() == 1 ? "holds" : "hold")} 0x{v:x} ({_functions.FunctionAt(v)?.Name ?? "in no module"})");
            throw Refused($"{what} whose slots in process {Pid} disagree: {string.Join("; ", held)}; refusing to choose (another tool may have redirected one)");
        }
        var address = implementations[0];
        return new IfuncUse(ifunc, address, _functions.FunctionAt(address), binding);
    }

    private static string Unresolved(IfuncBinding binding)
    {
        if (binding.Slots.Count == 0)
            return "no module has a GOT or IRELATIVE slot for it";
        var lazy = binding.Slots.Where(s => s.State == IfuncSlotState.Lazy).Select(s => s.ToString()).ToList();
        var unset = binding.Slots.Where(s => s.State == IfuncSlotState.Unset).Select(s => s.ToString()).ToList();
        var parts = new List<string>();
        if (lazy.Count > 0)
            parts.Add($"{List(lazy)} still {(lazy.Count == 1 ? "points" : "point")} into {(lazy.Count == 1 ? "its" : "their")} PLT: lazy binding, not called yet");
        if (unset.Count > 0)
            parts.Add($"{List(unset)} {(unset.Count == 1 ? "holds" : "hold")} no implementation");
        return string.Join("; ", parts);
    }

    private static PatchRefusedException Refused(string message) => new(LivePatchRefusal.IndirectFunction, message);
}
