using Iced.Intel;
using LivePatch.X86;

namespace LivePatch.Sites;

/// <summary>
/// What a <see cref="CallSiteBackend"/> knows about one call site when it decides: the site as recorded, and the
/// function its slot holds now (read from the running process, or from the file for <c>livepatch sites FILE</c>).
/// </summary>
public sealed class CallSitePatch
{
    /// <summary>The site's first byte, where the bytes the backend writes will run.</summary>
    public required ulong Address { get; init; }

    /// <summary>The site's length in bytes (16 for the sites.h macros).</summary>
    public required int Length { get; init; }

    /// <summary>The member's index in its ops table (byte offset / 8), as recorded.</summary>
    public required int Type { get; init; }

    /// <summary>The site's name, <c>ops.member</c>.</summary>
    public required string Name { get; init; }

    /// <summary>The registers the code around the site lets it change; flags are always free.</summary>
    public required GeneralRegisters Clobbers { get; init; }

    /// <summary>The address of the slot (ops-table member) the original site calls through.</summary>
    public required ulong SlotAddress { get; init; }

    /// <summary>True for a tail site (<c>jmp *SLOT(%rip)</c>): what replaces it must return to the caller itself.</summary>
    public required bool IsTail { get; init; }

    /// <summary>The address the slot holds now; 0 when it is null.</summary>
    public required ulong Function { get; init; }

    /// <summary>The name of the symbol at <see cref="Function"/>, or null when there is none (or the slot is null).</summary>
    public string? FunctionName { get; init; }

    /// <summary>The registers a call to <see cref="Function"/> may change: its <c>LP_OP_CLOBBERS</c> mask, or every caller-saved register.</summary>
    public GeneralRegisters FunctionClobbers { get; init; } = GeneralRegisters.CallerSaved;

    /// <summary>True when <see cref="Function"/> does nothing: it decodes to <c>ret</c>, <c>rep ret</c> or <c>endbr64; ret</c>.</summary>
    public bool FunctionIsNoOp { get; init; }

    /// <summary>True when the slot is null.</summary>
    public bool IsNull => Function == 0;

    /// <summary>The backend's choice in a few words (<c>slot holds native_rdtsc: native patchlet</c>), shown by <c>livepatch sites</c>; a backend sets it.</summary>
    public string? Reason { get; set; }

    /// <summary>How messages name the function in the slot: its symbol, or its address.</summary>
    public string FunctionText => FunctionName ?? $"0x{Function:x}";
}

/// <summary>
/// Decides what a call site becomes (the kernel's paravirt <c>patch</c> operation). <see cref="Patch"/> writes the
/// site's new instructions into a <see cref="PatchBuffer"/> that knows the site's address and returns how many bytes it
/// used; LivePatch pads the rest with NOPs and writes the whole site in one poke. A backend may hand any site to another
/// (<see cref="Direct"/>, <see cref="Default"/>) as the kernel's lguest falls back to <c>paravirt_patch_default</c>.
/// </summary>
/// <remarks>
/// The one rule a backend must keep: a <c>call</c> it writes must end at the end of the site, because threads inside
/// the called function return there — to the end of the original indirect call, or of whatever the site held before.
/// LivePatch checks it and refuses the result otherwise.
/// </remarks>
public abstract class CallSiteBackend
{
    /// <summary>What <see cref="Patch"/> returns to leave the site as it was built: the indirect call through its slot.</summary>
    public const int Unchanged = -1;

    private static readonly Lazy<CallSiteBackend> DefaultBackend = new(() => Native(Patchlet.Builtin));

    /// <summary>
    /// The default choice (the kernel's <c>paravirt_patch_default</c>): a direct <c>call rel32</c> to the slot's function
    /// ending at the end of the site (<c>jmp rel32</c> for a tail site); NOPs when the function does nothing (a tail
    /// site gets <c>ret</c>); <c>ud2</c> when the slot is null; <see cref="Unchanged"/> when the function may change
    /// registers the site keeps, or is beyond rel32 reach.
    /// </summary>
    public static CallSiteBackend Direct { get; } = new DirectCallSiteBackend();

    /// <summary>The backend <c>ApplyCallSites</c> and <c>livepatch sites</c> use unless told otherwise: <see cref="Native"/> with <see cref="Patchlet.Builtin"/>, falling back to <see cref="Direct"/>.</summary>
    public static CallSiteBackend Default => DefaultBackend.Value;

    /// <summary>
    /// A backend that copies a patchlet over the site when the slot holds the function the patchlet stands for
    /// (<c>native_rdtsc</c> for <c>lp_native_rdtsc</c>), the patchlet fits (with a <c>ret</c> after it on a tail site)
    /// and changes no register the site keeps; every other site goes to <paramref name="fallback"/> (<see cref="Direct"/> by default).
    /// </summary>
    public static CallSiteBackend Native(IEnumerable<Patchlet> patchlets, CallSiteBackend? fallback = null)
    {
        ArgumentNullException.ThrowIfNull(patchlets);
        return new NativeCallSiteBackend([.. patchlets], fallback ?? Direct);
    }

    /// <summary>
    /// Writes the new instructions of <paramref name="site"/> into <paramref name="buffer"/> (address and capacity are
    /// the site's) and returns how many bytes were written — 0 for a site of NOPs — or <see cref="Unchanged"/>.
    /// </summary>
    public abstract int Patch(CallSitePatch site, PatchBuffer buffer);

    /// <inheritdoc />
    public override string ToString() => GetType().Name;
}

/// <summary>The kernel's <c>paravirt_patch_default</c>: see <see cref="CallSiteBackend.Direct"/>.</summary>
internal sealed class DirectCallSiteBackend : CallSiteBackend
{
    public override int Patch(CallSitePatch site, PatchBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(site);
        ArgumentNullException.ThrowIfNull(buffer);
        if (site.IsNull)
        {
            site.Reason = "slot is null: ud2";
            buffer.WriteInstructions([Instruction.Create(Code.Ud2)]);
            return buffer.Length;
        }
        var function = site.FunctionText;
        if (site.FunctionIsNoOp)
        {
            if (!site.IsTail)
            {
                site.Reason = $"slot holds {function}, which does nothing: NOPs";
                return 0;
            }
            site.Reason = $"slot holds {function}, which does nothing: ret";
            buffer.WriteInstructions([Instruction.Create(Code.Retnq)]);
            return buffer.Length;
        }
        var extra = site.FunctionClobbers & ~site.Clobbers;
        if (extra != GeneralRegisters.None)
        {
            site.Reason = $"slot holds {function}, which may change {Patchlet.Registers(extra)} that the site keeps: left as the indirect call";
            return Unchanged;
        }
        // A call ends the site so that it returns where the indirect call returned; a jump may start it.
        var branch = site.IsTail ? site.Address : site.Address + (ulong)(site.Length - Branch.Rel32Length);
        if (!Branch.CanReach(branch, site.Function))
        {
            site.Reason = $"slot holds {function} at 0x{site.Function:x}, beyond the ±2 GiB of a rel32 branch: left as the indirect call";
            return Unchanged;
        }
        if (site.IsTail)
        {
            site.Reason = $"slot holds {function}: direct jmp";
            buffer.WriteJump(site.Function);
        }
        else
        {
            site.Reason = $"slot holds {function}: direct call";
            buffer.WriteNops(site.Length - Branch.Rel32Length);
            buffer.WriteCall(site.Function);
        }
        return buffer.Length;
    }

    public override string ToString() => "direct";
}

/// <summary>Patchlets where they fit, else the fallback: see <see cref="CallSiteBackend.Native"/>.</summary>
internal sealed class NativeCallSiteBackend(IReadOnlyList<Patchlet> patchlets, CallSiteBackend fallback) : CallSiteBackend
{
    public override int Patch(CallSitePatch site, PatchBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(site);
        ArgumentNullException.ThrowIfNull(buffer);
        var patchlet = site.IsNull ? null : patchlets.FirstOrDefault(p => p.Function == site.FunctionName);
        if (patchlet is null)
            return fallback.Patch(site, buffer);
        var needed = patchlet.Code.Length + (site.IsTail ? 1 : 0);
        var extra = patchlet.Clobbers & ~site.Clobbers;
        string why;
        if (needed > site.Length)
            why = $"{needed} bytes do not fit the site's {site.Length}";
        else if (extra != GeneralRegisters.None)
            why = $"changes {Patchlet.Registers(extra)} that the site keeps";
        else
        {
            site.Reason = $"slot holds {site.FunctionName}: native patchlet {patchlet.Name}";
            buffer.Write(patchlet.Code.Span);
            if (site.IsTail)
                buffer.WriteInstructions([Instruction.Create(Code.Retnq)]);
            return buffer.Length;
        }
        var used = fallback.Patch(site, buffer);
        site.Reason = $"{site.Reason ?? $"{fallback} decided"} (patchlet {patchlet.Name} {why})";
        return used;
    }

    public override string ToString() => $"native ({patchlets.Count} patchlets)";
}
