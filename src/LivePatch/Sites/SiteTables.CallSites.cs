using System.Buffers.Binary;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.X86;
using LivePatch.X86.Internal;

namespace LivePatch.Sites;

/// <summary>
/// One <c>LP_CALLSITE</c> (or <c>LP_CALLSITE_ASM</c> / <c>LP_TAILSITE_ASM</c>) site: NOPs ending with
/// <c>call *SLOT(%rip)</c> — or <c>jmp *SLOT(%rip)</c> for a tail site — that a <see cref="CallSiteBackend"/> may rewrite.
/// </summary>
/// <param name="Address">The site's first byte in the module (link-time address).</param>
/// <param name="Length">The site's length; the indirect call or jump is its last 6 bytes.</param>
/// <param name="Slot">The address of the ops-table member the site calls through (link-time address).</param>
/// <param name="Name">The site's name, <c>ops.member</c>.</param>
/// <param name="Clobbers">The registers the code around the site lets the call change.</param>
/// <param name="Type">The member's index in its ops table (its byte offset / 8).</param>
/// <param name="IsTail">True for <c>jmp *SLOT(%rip)</c>: the function the site belongs to ends by jumping to the member.</param>
public readonly record struct CallSite(ulong Address, int Length, ulong Slot, string Name, GeneralRegisters Clobbers, int Type, bool IsTail);

/// <summary>An <c>LP_OP_CLOBBERS</c> entry: a function of the module that changes only <paramref name="Clobbers"/> when called.</summary>
/// <param name="Function">The function's address in the module (link-time address).</param>
/// <param name="Clobbers">The registers it may change.</param>
public readonly record struct FunctionClobbers(ulong Function, GeneralRegisters Clobbers);

public sealed partial class SiteTables
{
    /// <summary>Section of <c>LP_CALLSITE</c> entries.</summary>
    public const string CallSiteTable = ".lp.callsites";

    /// <summary>Section holding the call sites' names (<c>ops.member</c>).</summary>
    public const string CallSiteNames = ".lp.callsite_names";

    /// <summary>Section of <c>LP_OP_CLOBBERS</c> entries.</summary>
    public const string OpClobbersTable = ".lp.op_clobbers";

    /// <summary>Size of one <c>.lp.callsites</c> entry.</summary>
    public const int CallSiteEntrySize = 16;

    /// <summary>Size of one <c>.lp.op_clobbers</c> entry.</summary>
    public const int OpClobbersEntrySize = 8;

    /// <summary>The length the macros give a call site (<c>LP_CALLSITE_LENGTH</c>): room for the native patchlets.</summary>
    public const int CallSiteLength = 16;

    /// <summary>The shortest call site: the indirect call itself, <c>ff 15 disp32</c>.</summary>
    public const int IndirectCallLength = 6;

    /// <summary>The call sites, in table order; empty when the module has no table.</summary>
    public IReadOnlyList<CallSite> CallSites { get; private init; } = [];

    /// <summary>The functions declared with <c>LP_OP_CLOBBERS</c>, in table order; empty when the module has no table.</summary>
    public IReadOnlyList<FunctionClobbers> OpClobbers { get; private init; } = [];

    /// <summary>The registers a call to <paramref name="function"/> (link-time address) may change: its <c>LP_OP_CLOBBERS</c> mask, or every caller-saved register.</summary>
    public GeneralRegisters ClobbersOf(ulong function) =>
        OpClobbers.FirstOrDefault(c => c.Function == function) is { Function: not 0 } declared ? declared.Clobbers : GeneralRegisters.CallerSaved;

    private static List<CallSite> ReadCallSites(ElfFile file, ElfSection table, ModuleImage module)
    {
        var data = TableData(file, table, CallSiteEntrySize).Span;
        var names = file.FindSection(CallSiteNames);
        var namesData = names is null || names.Type == ElfSectionType.NoBits ? default : file.GetSectionData(names).Span;
        var sites = new List<CallSite>(data.Length / CallSiteEntrySize);
        for (var index = 0; index * CallSiteEntrySize < data.Length; index++)
        {
            var offset = index * CallSiteEntrySize;
            var entry = data.Slice(offset, CallSiteEntrySize);
            var entryAddress = table.Address + (ulong)offset;
            var site = entryAddress + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(entry);
            var slot = entryAddress + 4 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(entry[4..]);
            var name = entryAddress + 8 + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(entry[8..]);
            var clobbers = (GeneralRegisters)BinaryPrimitives.ReadUInt16LittleEndian(entry[12..]);
            int type = entry[14];
            int length = entry[15];

            SiteTableException Bad(string reason) => new(CallSiteTable, index, reason);
            if (names is null || name < names.Address || name - names.Address >= (ulong)namesData.Length)
                throw Bad($"name 0x{name:x} is outside {CallSiteNames}");
            var text = namesData[(int)(name - names.Address)..];
            var end = text.IndexOf((byte)0);
            if (end <= 0)
                throw Bad(end == 0 ? "the site's name is empty" : "the site's name is not NUL-terminated");
            var siteName = System.Text.Encoding.UTF8.GetString(text[..end]);
            if (length > PatchBuffer.MaxPatchLength)
                throw Bad($"site '{siteName}' of {length} bytes is longer than the {PatchBuffer.MaxPatchLength}-byte patch limit");
            if (length < IndirectCallLength)
                throw Bad($"site '{siteName}' of {length} bytes is shorter than the {IndirectCallLength}-byte indirect call");
            if (clobbers.HasFlag(GeneralRegisters.Rsp))
                throw Bad($"site '{siteName}' declares rsp clobbered (mask 0x{(ushort)clobbers:x4}): a call cannot change the stack pointer");
            if (!module.IsExecutable(site, length))
                throw Bad($"site '{siteName}' 0x{site:x}+{length} is outside the executable code of the module");
            if (!IsData(file, slot, 8))
                throw Bad($"slot 0x{slot:x} of site '{siteName}' is outside the module's data");
            var isTail = IndirectBranchThrough(module.Bytes(site, length), site, slot, out var why)
                ?? throw Bad($"site '{siteName}' at 0x{site:x} {why}");
            sites.Add(new CallSite(site, length, slot, siteName, clobbers, type, isTail));
        }

        RefuseOverlaps(CallSiteTable, [.. sites.Select(s => (s.Address, s.Length))], "call", sharedSites: false);
        return sites;
    }

    private static List<FunctionClobbers> ReadOpClobbers(ElfFile file, ElfSection table, ModuleImage module)
    {
        var data = TableData(file, table, OpClobbersEntrySize).Span;
        var entries = new List<FunctionClobbers>(data.Length / OpClobbersEntrySize);
        for (var index = 0; index * OpClobbersEntrySize < data.Length; index++)
        {
            var offset = index * OpClobbersEntrySize;
            var function = table.Address + (ulong)offset + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(data[offset..]);
            var clobbers = (GeneralRegisters)BinaryPrimitives.ReadUInt16LittleEndian(data[(offset + 4)..]);
            var reserved = BinaryPrimitives.ReadUInt16LittleEndian(data[(offset + 6)..]);

            SiteTableException Bad(string reason) => new(OpClobbersTable, index, reason);
            if (!module.IsExecutable(function, 1))
                throw Bad($"function 0x{function:x} is outside the executable code of the module");
            if (clobbers.HasFlag(GeneralRegisters.Rsp))
                throw Bad($"function 0x{function:x} is declared to clobber rsp (mask 0x{(ushort)clobbers:x4})");
            if (reserved != 0)
                throw Bad($"reserved field is 0x{reserved:x4}, not 0");
            if (entries.FirstOrDefault(e => e.Function == function) is { Function: not 0 } earlier && earlier.Clobbers != clobbers)
                throw Bad($"function 0x{function:x} is declared again with mask 0x{(ushort)clobbers:x4} (earlier 0x{(ushort)earlier.Clobbers:x4})");
            entries.Add(new FunctionClobbers(function, clobbers));
        }

        return entries;
    }

    /// <summary>
    /// True for a tail site, false for a call site, null (with <paramref name="why"/>) when <paramref name="code"/>
    /// is not NOPs followed by <c>call</c> or <c>jmp</c> through <paramref name="slot"/> as its last 6 bytes.
    /// </summary>
    internal static bool? IndirectBranchThrough(ReadOnlySpan<byte> code, ulong address, ulong slot, out string why)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code.ToArray()), address);
        var end = address + (ulong)code.Length;
        while (decoder.IP < end)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
            {
                why = $"holds bytes that are not whole instructions at 0x{instruction.IP:x}";
                return null;
            }
            if (instruction.NextIP != end)
            {
                if (instruction.Mnemonic == Mnemonic.Nop)
                    continue;
                why = $"holds {InstructionText.Format(instruction)} where only NOPs may come before the indirect call";
                return null;
            }
            var isTail = instruction.Code == Code.Jmp_rm64;
            if ((instruction.Code != Code.Call_rm64 && !isTail) || instruction.Length != IndirectCallLength || !instruction.IsIPRelativeMemoryOperand)
            {
                why = $"ends with {InstructionText.Format(instruction)}, not call or jmp through a RIP-relative slot (ff 15 / ff 25 disp32)";
                return null;
            }
            if (instruction.IPRelativeMemoryAddress != slot)
            {
                why = $"{(isTail ? "jumps" : "calls")} through 0x{instruction.IPRelativeMemoryAddress:x}, not its recorded slot 0x{slot:x}";
                return null;
            }
            why = "";
            return isTail;
        }
        why = "does not end on an instruction boundary";
        return null;
    }

    // Ops tables live in writable or read-only data (.data, .data.rel.ro, .bss): a non-executable PT_LOAD segment.
    private static bool IsData(ElfFile file, ulong address, int length) => file.LoadSegments.Any(s =>
        !s.Flags.HasFlag(ElfSegmentPermissions.Execute) && address >= s.VirtualAddress && address - s.VirtualAddress <= s.MemorySize
        && (ulong)length <= s.MemorySize - (address - s.VirtualAddress));
}
