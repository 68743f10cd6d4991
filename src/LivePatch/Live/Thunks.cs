using LivePatch.Payloads;
using LivePatch.X86;

namespace LivePatch.Live;

/// <summary>
/// The paravirt clobber rule for live patches: gcc (-fipa-ra, on at -O2) lets the callers of a function that binds
/// locally keep values in the call-clobbered registers it never writes. Where the new function may write one of
/// those, its callers would lose them: the jump then goes through a callee-save thunk (<see cref="CalleeSaveThunk"/>)
/// that keeps exactly those registers around the call; elsewhere it goes straight to the new function.
/// </summary>
internal sealed class Thunks(LiveSession session)
{
    private readonly ClobberAnalysis _clobbers = new(session.Target);
    private readonly int _vectorBytes = CalleeSaveThunk.VectorBytes(CpuFeatures.Detect());

    /// <summary>Entry <paramref name="index"/>'s thunk in the trampolines block at <paramref name="block"/>, after the <paramref name="entries"/> trampolines.</summary>
    public static ulong Address(ulong block, int entries, int index) => block + (ulong)(entries * Trampolines.Size + index * CalleeSaveThunk.MaxSize);

    /// <summary>
    /// The registers the callers of <paramref name="entry"/>'s old function may rely on that its new function (at
    /// <paramref name="newAddress"/> in <paramref name="linked"/>) may write: what a thunk must keep; empty when none.
    /// </summary>
    /// <exception cref="PatchRefusedException">They include registers no thunk keeps (mask registers).</exception>
    public ClobberSet AtRisk(PlannedEntry entry, LinkedPayload linked, ulong newAddress)
    {
        var old = _clobbers.OfTargetFunction(entry.Symbol.Address);
        var keep = _clobbers.OfPayloadFunction(linked, newAddress).Except(old);
        if (keep.Masks != 0 || (_vectorBytes < 64 && (keep.Vectors & 0xffff0000u) != 0))
            throw new PatchRefusedException(LivePatchRefusal.CallerRegistersAtRisk,
                $"{entry.Name} in process {session.Pid} never writes {keep}, which its callers may keep values in, and the new function may: no thunk keeps mask registers; refusing to patch it");
        return keep;
    }

    /// <summary>The thunk keeping <paramref name="keep"/> at <paramref name="address"/> around a call of <paramref name="newAddress"/>.</summary>
    public byte[] Assemble(ulong address, ulong newAddress, ClobberSet keep) => CalleeSaveThunk.Assemble(address, newAddress, keep, _vectorBytes);

    /// <summary>For messages and the record: <c>through a thunk keeping rcx, r8</c>.</summary>
    public static string Describe(AppliedFunctionInfo function) => function.Thunk == 0 ? "" : $" (through a thunk keeping {function.Keeps})";
}
