using Iced.Intel;
using LivePatch.Payloads;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// The paravirt clobber rule for live patches: gcc (-fipa-ra, on at -O2) lets the callers of a function that binds
/// locally keep values in the call-clobbered registers it never writes. Where the new function may write one of
/// those, its callers would lose them: the jump then goes through a callee-save thunk (<see cref="CalleeSaveThunk"/>)
/// that keeps exactly those registers around the call; elsewhere it goes straight to the new function. The old code
/// is analysed under-approximating, the new over-approximating (<see cref="Approximation"/>): whatever either cannot
/// read, the thunk keeps more. One thing a thunk cannot do is keep a register the old function may return its result
/// in: where the old code could not be read whole and the new one writes rax, rdx, xmm0 or xmm1 beyond what the old
/// provably writes, those may carry the result (a thunk would undo it) or a caller's value (a jump would lose it),
/// and the patch is refused.
/// </summary>
internal sealed class Thunks(LiveSession session)
{
    // The System V return registers (integer and SSE classes).
    private static readonly ClobberSet ReturnRegisters = ClobberSet.Of(Register.RAX).Union(ClobberSet.Of(Register.RDX))
        .Union(ClobberSet.Of(Register.XMM0)).Union(ClobberSet.Of(Register.XMM1));

    private readonly ClobberAnalysis _oldCode = new(session.Target, Approximation.Under);
    private readonly ClobberAnalysis _newCode = new(session.Target, Approximation.Over);
    // The CPU does not change under a process: read once. Vector registers as wide as the thunk keeps them; mask
    // registers 64 bits with AVX512BW, 16 with AVX512F alone.
    private static readonly CpuFeatures Cpu = CpuFeatures.Detect();
    private static readonly int VectorBytes = CalleeSaveThunk.VectorBytes(Cpu);
    private static readonly int MaskBytes = Cpu.Has(CpuFeature.Avx512Bw) ? 8 : 2;

    // The registers this CPU has: xmm16-31 and k0-k7 come with AVX-512 (64-byte vectors).
    private static readonly ClobberSet Present = VectorBytes >= 64
        ? ClobberSet.Everything
        : new ClobberSet(GeneralRegisters.CallerSaved, 0xffffu, 0);

    /// <summary>Entry <paramref name="index"/>'s thunk in the trampolines block at <paramref name="block"/>, after the <paramref name="entries"/> trampolines.</summary>
    public static ulong Address(ulong block, int entries, int index) => block + (ulong)(entries * Trampolines.Size + index * CalleeSaveThunk.MaxSize);

    /// <summary>
    /// The registers the callers of <paramref name="entry"/>'s old function may rely on that its new function (at
    /// <paramref name="newAddress"/> in <paramref name="linked"/>) may write: what a thunk must keep; empty when none.
    /// </summary>
    /// <exception cref="PatchRefusedException">They include return registers of an old function that could not be read whole.</exception>
    public ClobberSet AtRisk(PlannedEntry entry, LinkedPayload linked, ulong newAddress)
    {
        var old = _oldCode.OfTargetFunction(entry.Symbol.Address);
        // Registers this CPU lacks (k0-k7 and xmm16-31 without AVX-512) hold nobody's values and no code writes them:
        // an over-approximated "everything" (a call through the PLT) must not refuse the patch for them.
        var keep = _newCode.OfPayloadFunction(linked, newAddress).Set.Except(old.Set).Intersect(Present);
        if (old.Unknown is not null && keep.Intersect(ReturnRegisters) is { IsEmpty: false } result)
            throw new PatchRefusedException(LivePatchRefusal.CallerRegistersAtRisk,
                $"{entry.Name} in process {session.Pid} could not be read whole ({old.Unknown}) and the new function writes {result}, which it may return its result in or its callers may keep values in: neither a jump nor a thunk is safe; refusing to patch it");
        return keep;
    }

    /// <summary>The thunk keeping <paramref name="keep"/> at <paramref name="address"/> around a call of <paramref name="newAddress"/>.</summary>
    public static byte[] Assemble(ulong address, ulong newAddress, ClobberSet keep) => CalleeSaveThunk.Assemble(address, newAddress, keep, VectorBytes, MaskBytes);

    /// <summary>For messages and the record: <c>through a thunk keeping rcx, r8</c>.</summary>
    public static string Describe(AppliedFunctionInfo function) => function.Thunk == 0 ? "" : $" (through a thunk keeping {function.Keeps})";
}
