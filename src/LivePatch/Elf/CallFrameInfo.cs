using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace LivePatch.Elf;

/// <summary>How the caller's value of a register (or the CFA) is found in one row of call-frame information.</summary>
internal enum RuleKind : byte
{
    /// <summary>The callee did not change it (the default for callee-saved registers).</summary>
    SameValue,

    /// <summary>It cannot be recovered (a return-address column marked so ends the chain: thread start).</summary>
    Undefined,

    /// <summary>Saved at CFA + <see cref="RegisterRule.Value"/>.</summary>
    Offset,

    /// <summary>Is CFA + <see cref="RegisterRule.Value"/>.</summary>
    ValueOffset,

    /// <summary>Held in register <see cref="RegisterRule.Value"/>.</summary>
    Register,

    /// <summary>Saved at the address a DWARF expression computes (the CFA pushed first).</summary>
    Expression,

    /// <summary>Is the value a DWARF expression computes (the CFA pushed first).</summary>
    ValueExpression,
}

/// <summary>
/// One register's rule: <paramref name="Kind"/>, its offset or register in <paramref name="Value"/>, or its expression
/// as [<paramref name="ExpressionOffset"/>, + <paramref name="ExpressionLength"/>) of <c>.eh_frame</c>.
/// </summary>
internal readonly record struct RegisterRule(RuleKind Kind, long Value, int ExpressionOffset = 0, int ExpressionLength = 0);

/// <summary>The x86-64 DWARF registers a row tracks: 0-15 the general registers (rax rdx rcx rbx rsi rdi rbp rsp r8-r15), 16 the return address.</summary>
[InlineArray(CallFrameInfo.Registers)]
internal struct RegisterRules
{
    private RegisterRule _first;
}

/// <summary>
/// The row of call-frame information that holds at one address: how to compute the CFA (register + offset, or a
/// DWARF expression) and how to find the caller's value of each register.
/// </summary>
internal struct UnwindRow
{
    /// <summary>The CFA is <see cref="CfaRegister"/> + <see cref="CfaOffset"/>, unless <see cref="CfaExpressionLength"/> is not 0.</summary>
    public int CfaRegister;

    /// <summary>Added to <see cref="CfaRegister"/>'s value.</summary>
    public long CfaOffset;

    /// <summary>Where the CFA expression starts in <c>.eh_frame</c> (when <see cref="CfaExpressionLength"/> is not 0).</summary>
    public int CfaExpressionOffset;

    /// <summary>The CFA expression's length; 0 for register + offset.</summary>
    public int CfaExpressionLength;

    /// <summary>The rules of registers 0-16.</summary>
    public RegisterRules Rules;

    /// <summary>True for a signal trampoline's frame (augmentation <c>S</c>): the caller's PC is the interrupted instruction, not a return address.</summary>
    public bool IsSignalFrame;

    /// <summary>The first address the FDE covers, as the file says it.</summary>
    public ulong FunctionStart;
}

/// <summary>
/// The call-frame information of one ELF file's <c>.eh_frame</c> (what gcc emits by default on x86-64 and glibc's
/// hand-written code declares with <c>cfi_*</c> directives): CIEs with augmentations <c>z</c>, <c>R</c>, <c>P</c>,
/// <c>L</c>, <c>S</c>; FDEs found by binary search, in the <c>.eh_frame_hdr</c> table when the file has one, else in
/// an index built once from every FDE. <see cref="TryFindRow"/> runs a function's CFA program up to an address. Built
/// before a stop, used inside it: finding a row allocates nothing. Addresses are the file's (link-time) ones. What
/// this reader does not understand (an augmentation, a pointer encoding, a CFA instruction) makes that function
/// "no CFI" for the caller, never a guess.
/// </summary>
internal sealed class CallFrameInfo
{
    /// <summary>The registers a row tracks (0-16).</summary>
    public const int Registers = 17;

    /// <summary>DWARF's number for the return-address column on x86-64.</summary>
    public const int ReturnAddress = 16;

    private const int MaxRememberedStates = 8;

    private readonly byte[] _data;
    private readonly ulong _address;
    private readonly ulong[] _starts;
    private readonly int[] _fdes;
    private readonly Dictionary<int, Cie?> _cies = [];

    private CallFrameInfo(byte[] data, ulong address, ulong[] starts, int[] fdes, bool fromHeader)
    {
        _data = data;
        _address = address;
        _starts = starts;
        _fdes = fdes;
        FromHeader = fromHeader;
    }

    /// <summary>A file without <c>.eh_frame</c>: every lookup finds nothing.</summary>
    public static CallFrameInfo Empty { get; } = new([], 0, [], [], false);

    /// <summary>The FDEs indexed.</summary>
    public int Count => _starts.Length;

    /// <summary>True when the index came from <c>.eh_frame_hdr</c>'s table rather than a walk of <c>.eh_frame</c>.</summary>
    public bool FromHeader { get; }

    /// <summary>The bytes of <c>.eh_frame</c> (expressions are read from them).</summary>
    public ReadOnlySpan<byte> Data => _data;

    /// <summary>Reads <paramref name="elf"/>'s <c>.eh_frame</c> and indexes its FDEs; <see cref="Empty"/> when it has none.</summary>
    /// <exception cref="ElfFormatException">A CIE or FDE, or the header's table, lies about its length or encoding.</exception>
    public static CallFrameInfo Read(ElfFile elf)
    {
        ArgumentNullException.ThrowIfNull(elf);
        var section = elf.FindSection(".eh_frame");
        if (section is null || !section.HasFileData || section.Size == 0)
            return Empty;
        var data = elf.GetSectionData(section).ToArray();
        if (elf.FindSection(".eh_frame_hdr") is { HasFileData: true } header
            && HeaderTable(elf.GetSectionData(header).Span, header, section) is { } table)
            return new CallFrameInfo(data, section.Address, table.Starts, table.Fdes, true);
        return Walk(data, section);
    }

    /// <summary>
    /// The row that holds at <paramref name="pc"/> (a file address): false with <paramref name="why"/> when no FDE
    /// covers it or its CIE or program uses something this reader does not understand.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool TryFindRow(ulong pc, out UnwindRow row, out string? why)
    {
        row = default;
        var index = LastAtOrBefore(pc);
        if (index < 0)
        {
            why = "no CFI";
            return false;
        }
        var fde = _fdes[index];
        if (!TryReadFde(fde, out var cie, out var begin, out var range, out var program, out var programEnd))
        {
            why = "CFI not understood";
            return false;
        }
        if (pc < begin || pc - begin >= range)
        {
            why = "no CFI";
            return false;
        }
        row.CfaRegister = -1;
        for (var r = 0; r < Registers; r++)
            row.Rules[r] = new RegisterRule(RuleKind.SameValue, 0);
        // The CIE's initial instructions give the rules DW_CFA_restore goes back to.
        var loc = begin;
        if (!Execute(cie, cie.Program, cie.ProgramEnd, ref row, default, ref loc, ulong.MaxValue, inCie: true))
        {
            why = "CFI not understood";
            return false;
        }
        var initial = row.Rules;
        loc = begin;
        if (!Execute(cie, program, programEnd, ref row, initial, ref loc, pc, inCie: false) || row.CfaRegister < 0 && row.CfaExpressionLength == 0)
        {
            why = "CFI not understood";
            return false;
        }
        row.IsSignalFrame = cie.IsSignalFrame;
        row.FunctionStart = begin;
        why = null;
        return true;
    }

    /// <summary>
    /// How many bytes the function starting at <paramref name="start"/> (a file address) has, from the FDE that begins
    /// there (gcc's <c>.cfi_startproc</c> to <c>.cfi_endproc</c>: the whole function); false when no FDE begins there.
    /// </summary>
    public bool TryFindFunction(ulong start, out ulong size)
    {
        size = 0;
        var index = LastAtOrBefore(start);
        if (index < 0 || !TryReadFde(_fdes[index], out _, out var begin, out var range, out _, out _) || begin != start)
            return false;
        size = range;
        return true;
    }

    private int LastAtOrBefore(ulong pc)
    {
        int low = 0, high = _starts.Length - 1, found = -1;
        while (low <= high)
        {
            var middle = (low + high) >>> 1;
            if (_starts[middle] <= pc)
            {
                found = middle;
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }
        return found;
    }

    // DWARF call frame instructions (DWARF 5, 6.4.2) with the GNU ones gcc emits, run while loc <= pc; false for one
    // not understood. In a CIE (inCie) DW_CFA_restore has nothing to go back to.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    [SkipLocalsInit] // the remembered-state stack is written before it is read: no need to clear 3.5 KiB per call
    private bool Execute(Cie cie, int position, int end, ref UnwindRow row, RegisterRules initialRules, ref ulong loc, ulong pc, bool inCie)
    {
        Span<UnwindRow> saved = stackalloc UnwindRow[MaxRememberedStates];
        var depth = 0;
        var reader = new Reader(_data, position, end);
        while (reader.Position < end)
        {
            var op = reader.Byte();
            var operand = op & 0x3f;
            switch (op >> 6)
            {
                case 1: // DW_CFA_advance_loc
                    if (!Advance(ref loc, (ulong)operand * cie.CodeAlignment, pc))
                        return true;
                    continue;
                case 2: // DW_CFA_offset
                    if (!SetRule(ref row, (ulong)operand, new RegisterRule(RuleKind.Offset, (long)reader.Uleb() * cie.DataAlignment)))
                        return false;
                    continue;
                case 3: // DW_CFA_restore
                    if (inCie || !Restore(ref row, initialRules, (ulong)operand))
                        return false;
                    continue;
            }
            switch (op)
            {
                case 0x00: // DW_CFA_nop
                    break;
                case 0x01: // DW_CFA_set_loc
                    {
                        var address = reader.Position;
                        if (!TryReadPointer(ref reader, cie.FdeEncoding, address, out var target))
                            return false;
                        if (target > pc)
                            return true;
                        loc = target;
                        break;
                    }
                case 0x02: // DW_CFA_advance_loc1
                    if (!Advance(ref loc, reader.Byte() * cie.CodeAlignment, pc))
                        return true;
                    break;
                case 0x03: // DW_CFA_advance_loc2
                    if (!Advance(ref loc, reader.UInt16() * cie.CodeAlignment, pc))
                        return true;
                    break;
                case 0x04: // DW_CFA_advance_loc4
                    if (!Advance(ref loc, reader.UInt32() * cie.CodeAlignment, pc))
                        return true;
                    break;
                case 0x05: // DW_CFA_offset_extended
                    {
                        var register = reader.Uleb();
                        if (!SetRule(ref row, register, new RegisterRule(RuleKind.Offset, (long)reader.Uleb() * cie.DataAlignment)))
                            return false;
                        break;
                    }
                case 0x06: // DW_CFA_restore_extended
                    if (inCie || !Restore(ref row, initialRules, reader.Uleb()))
                        return false;
                    break;
                case 0x07: // DW_CFA_undefined
                    if (!SetRule(ref row, reader.Uleb(), new RegisterRule(RuleKind.Undefined, 0)))
                        return false;
                    break;
                case 0x08: // DW_CFA_same_value
                    if (!SetRule(ref row, reader.Uleb(), new RegisterRule(RuleKind.SameValue, 0)))
                        return false;
                    break;
                case 0x09: // DW_CFA_register
                    {
                        var register = reader.Uleb();
                        var from = reader.Uleb();
                        if (from >= Registers || !SetRule(ref row, register, new RegisterRule(RuleKind.Register, (long)from)))
                            return false;
                        break;
                    }
                case 0x0a: // DW_CFA_remember_state
                    if (depth == MaxRememberedStates)
                        return false;
                    saved[depth++] = row;
                    break;
                case 0x0b: // DW_CFA_restore_state
                    if (depth == 0)
                        return false;
                    row = saved[--depth];
                    break;
                case 0x0c: // DW_CFA_def_cfa
                    row.CfaRegister = CfaRegister(reader.Uleb());
                    row.CfaOffset = (long)reader.Uleb();
                    row.CfaExpressionLength = 0;
                    if (row.CfaRegister < 0)
                        return false;
                    break;
                case 0x0d: // DW_CFA_def_cfa_register
                    row.CfaRegister = CfaRegister(reader.Uleb());
                    if (row.CfaRegister < 0 || row.CfaExpressionLength != 0)
                        return false;
                    break;
                case 0x0e: // DW_CFA_def_cfa_offset
                    if (row.CfaExpressionLength != 0)
                        return false;
                    row.CfaOffset = (long)reader.Uleb();
                    break;
                case 0x0f: // DW_CFA_def_cfa_expression
                    {
                        var length = (int)reader.Uleb();
                        row.CfaExpressionOffset = reader.Position;
                        row.CfaExpressionLength = length;
                        row.CfaRegister = 0;
                        reader.Skip(length);
                        if (length == 0)
                            return false;
                        break;
                    }
                case 0x10: // DW_CFA_expression
                case 0x16: // DW_CFA_val_expression
                    {
                        var register = reader.Uleb();
                        var length = (int)reader.Uleb();
                        var rule = new RegisterRule(op == 0x10 ? RuleKind.Expression : RuleKind.ValueExpression, 0, reader.Position, length);
                        reader.Skip(length);
                        if (!SetRule(ref row, register, rule))
                            return false;
                        break;
                    }
                case 0x11: // DW_CFA_offset_extended_sf
                    {
                        var register = reader.Uleb();
                        if (!SetRule(ref row, register, new RegisterRule(RuleKind.Offset, reader.Sleb() * cie.DataAlignment)))
                            return false;
                        break;
                    }
                case 0x12: // DW_CFA_def_cfa_sf
                    row.CfaRegister = CfaRegister(reader.Uleb());
                    row.CfaOffset = reader.Sleb() * cie.DataAlignment;
                    row.CfaExpressionLength = 0;
                    if (row.CfaRegister < 0)
                        return false;
                    break;
                case 0x13: // DW_CFA_def_cfa_offset_sf
                    if (row.CfaExpressionLength != 0)
                        return false;
                    row.CfaOffset = reader.Sleb() * cie.DataAlignment;
                    break;
                case 0x14: // DW_CFA_val_offset
                    {
                        var register = reader.Uleb();
                        if (!SetRule(ref row, register, new RegisterRule(RuleKind.ValueOffset, (long)reader.Uleb() * cie.DataAlignment)))
                            return false;
                        break;
                    }
                case 0x15: // DW_CFA_val_offset_sf
                    {
                        var register = reader.Uleb();
                        if (!SetRule(ref row, register, new RegisterRule(RuleKind.ValueOffset, reader.Sleb() * cie.DataAlignment)))
                            return false;
                        break;
                    }
                case 0x2e: // DW_CFA_GNU_args_size: stack arguments pushed; the CFA rule already accounts for them
                    reader.Uleb();
                    break;
                case 0x2f: // DW_CFA_GNU_negative_offset_extended
                    {
                        var register = reader.Uleb();
                        if (!SetRule(ref row, register, new RegisterRule(RuleKind.Offset, -(long)reader.Uleb() * cie.DataAlignment)))
                            return false;
                        break;
                    }
                default:
                    return false;
            }
            if (reader.Failed)
                return false;
        }
        return !reader.Failed;
    }

    private static bool Advance(ref ulong loc, ulong delta, ulong pc)
    {
        var next = loc + delta;
        if (next > pc)
            return false;
        loc = next;
        return true;
    }

    // The CFA is computed from a general register (rsp or rbp in practice), never from the return-address column.
    private static int CfaRegister(ulong register) => register < ReturnAddress ? (int)register : -1;

    // Registers past the return-address column (vector registers) do not matter for finding frames: their rules are dropped.
    private static bool SetRule(ref UnwindRow row, ulong register, RegisterRule rule)
    {
        if (register < Registers)
            row.Rules[(int)register] = rule;
        return register < 128;
    }

    private static bool Restore(ref UnwindRow row, RegisterRules initial, ulong register)
    {
        if (register < Registers)
            row.Rules[(int)register] = initial[(int)register];
        return register < 128;
    }

    // One FDE at offset: its CIE (parsed once), the code it covers and its program.
    private bool TryReadFde(int offset, out Cie cie, out ulong begin, out ulong range, out int program, out int programEnd)
    {
        cie = null!;
        begin = range = 0;
        program = programEnd = 0;
        var reader = new Reader(_data, offset, _data.Length);
        if (!reader.TryLength(out var end) || end > _data.Length)
            return false;
        var pointerAt = reader.Position;
        var cieDelta = reader.UInt32();
        if (cieDelta == 0 || reader.Failed)
            return false; // a CIE, not an FDE
        var cieOffset = (long)pointerAt - cieDelta;
        if (cieOffset < 0 || ParseCie((int)cieOffset) is not { } found)
            return false;
        cie = found;
        if (!TryReadPointer(ref reader, cie.FdeEncoding, reader.Position, out begin))
            return false;
        if (!TryReadPointer(ref reader, (byte)(cie.FdeEncoding & 0x0f), reader.Position, out range))
            return false;
        if (cie.HasAugmentationData)
            reader.Skip((int)reader.Uleb());
        if (reader.Failed || reader.Position > end)
            return false;
        program = reader.Position;
        programEnd = end;
        return true;
    }

    private Cie? ParseCie(int offset)
    {
        lock (_cies)
        {
            if (_cies.TryGetValue(offset, out var known))
                return known;
            var cie = Cie.Parse(this, offset);
            _cies[offset] = cie;
            return cie;
        }
    }

    /// <summary>Reads a pointer in DWARF EH encoding <paramref name="encoding"/> at <paramref name="reader"/>; false for what is not supported.</summary>
    private bool TryReadPointer(ref Reader reader, byte encoding, int fieldOffset, out ulong value)
    {
        value = 0;
        if (encoding == 0xff) // DW_EH_PE_omit
            return true;
        ulong raw;
        switch (encoding & 0x0f)
        {
            case 0x00: raw = reader.UInt64(); break; // absptr
            case 0x01: raw = reader.Uleb(); break;
            case 0x02: raw = reader.UInt16(); break;
            case 0x03: raw = reader.UInt32(); break;
            case 0x04: raw = reader.UInt64(); break;
            case 0x09: raw = (ulong)reader.Sleb(); break;
            case 0x0a: raw = (ulong)(long)(short)reader.UInt16(); break;
            case 0x0b: raw = (ulong)(long)(int)reader.UInt32(); break;
            case 0x0c: raw = reader.UInt64(); break;
            default: return false;
        }
        switch (encoding & 0x70)
        {
            case 0x00: value = raw; break;
            case 0x10: value = _address + (ulong)fieldOffset + raw; break; // pcrel: from the field's own address
            default: return false; // textrel, datarel, funcrel, aligned: not used in .eh_frame by gcc or glibc
        }
        // DW_EH_PE_indirect would need the pointer's target read from memory: no code address is encoded so.
        return (encoding & 0x80) == 0 && !reader.Failed;
    }

    /// <summary>Skips an encoded pointer whose value is not needed (a personality routine): only its size matters.</summary>
    private static bool SkipPointer(ref Reader reader, byte encoding)
    {
        switch (encoding & 0x0f)
        {
            case 0x00: case 0x04: case 0x0c: reader.Skip(8); break;
            case 0x01: reader.Uleb(); break;
            case 0x09: reader.Sleb(); break;
            case 0x02: case 0x0a: reader.Skip(2); break;
            case 0x03: case 0x0b: reader.Skip(4); break;
            default: return false;
        }
        return (encoding & 0x70) is 0x00 or 0x10 && !reader.Failed;
    }

    // .eh_frame_hdr: version 1, eh_frame_ptr, fde_count and a table of (initial location, FDE address) pairs sorted
    // by location, both datarel sdata4 (relative to the header) in every file binutils and lld write. Another
    // encoding, or a table that does not point into .eh_frame, means the walk.
    private static (ulong[] Starts, int[] Fdes)? HeaderTable(ReadOnlySpan<byte> header, ElfSection headerSection, ElfSection frames)
    {
        if (header.Length < 12 || header[0] != 1 || header[2] == 0xff || header[3] != 0x3b)
            return null;
        var position = 4;
        switch (header[1])
        {
            case 0x1b: case 0x3b: case 0x03: case 0x0b: position += 4; break; // eh_frame_ptr, 4 bytes
            case 0x00: case 0x04: case 0x0c: position += 8; break;
            default: return null;
        }
        if (header[2] is not (0x03 or 0x0b) || position + 4 > header.Length)
            return null;
        var count = BinaryPrimitives.ReadUInt32LittleEndian(header[position..]);
        position += 4;
        if ((ulong)count * 8 > (ulong)(header.Length - position))
            throw new ElfFormatException($"{headerSection}: its table of {count} FDEs runs past the section's end", (long)headerSection.Offset + position);
        var starts = new ulong[count];
        var fdes = new int[count];
        for (var i = 0; i < count; i++)
        {
            var at = position + i * 8;
            starts[i] = headerSection.Address + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(header[at..]);
            var fde = headerSection.Address + (ulong)(long)BinaryPrimitives.ReadInt32LittleEndian(header[(at + 4)..]);
            if (fde < frames.Address || fde - frames.Address >= frames.Size)
                return null;
            fdes[i] = (int)(fde - frames.Address);
            if (i > 0 && starts[i] < starts[i - 1])
                return null;
        }
        return (starts, fdes);
    }

    // Every FDE of .eh_frame, sorted by the first address it covers.
    private static CallFrameInfo Walk(byte[] data, ElfSection section)
    {
        var info = new CallFrameInfo(data, section.Address, [], [], false);
        var entries = new List<(ulong Start, int Fde)>();
        var offset = 0;
        while (offset + 4 <= data.Length)
        {
            var reader = new Reader(data, offset, data.Length);
            var length = reader.UInt32();
            if (length == 0)
                break; // the terminator crtend.o adds
            if (!reader.TryLength(offset, out var end) || end > data.Length)
                throw new ElfFormatException($"{section}: the entry at 0x{offset:x} runs past the section's end", (long)section.Offset + offset);
            var id = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(reader.Position));
            if (id != 0 && info.TryReadFde(offset, out _, out var begin, out var range, out _, out _) && range > 0)
                entries.Add((begin, offset));
            offset = end;
        }
        entries.Sort((a, b) => a.Start.CompareTo(b.Start));
        return new CallFrameInfo(data, section.Address, [.. entries.Select(e => e.Start)], [.. entries.Select(e => e.Fde)], false);
    }

    /// <summary>A Common Information Entry: what its FDEs share.</summary>
    private sealed class Cie
    {
        public ulong CodeAlignment;
        public long DataAlignment;
        public byte FdeEncoding;
        public bool HasAugmentationData;
        public bool IsSignalFrame;
        public int Program;
        public int ProgramEnd;

        // Null for a CIE this reader does not understand: its FDEs are "no CFI".
        public static Cie? Parse(CallFrameInfo info, int offset)
        {
            var data = info._data;
            var reader = new Reader(data, offset, data.Length);
            if (!reader.TryLength(out var end) || end > data.Length || reader.UInt32() != 0)
                return null;
            var version = reader.Byte();
            if (version is not (1 or 3 or 4))
                return null;
            var augmentationStart = reader.Position;
            while (reader.Position < end && reader.Byte() != 0)
            {
            }
            var augmentation = data.AsSpan(augmentationStart, reader.Position - augmentationStart - 1);
            if (version == 4)
            {
                if (reader.Byte() != 8 || reader.Byte() != 0) // address size, segment selector size
                    return null;
            }
            var cie = new Cie { FdeEncoding = 0x00, CodeAlignment = reader.Uleb(), DataAlignment = reader.Sleb() };
            var returnColumn = version == 1 ? reader.Byte() : reader.Uleb();
            if (returnColumn != ReturnAddress)
                return null;
            if (augmentation.Length > 0)
            {
                if (augmentation[0] != (byte)'z')
                    return null;
                cie.HasAugmentationData = true;
                var dataLength = (int)reader.Uleb();
                var dataEnd = reader.Position + dataLength;
                foreach (var letter in augmentation[1..])
                {
                    switch ((char)letter)
                    {
                        case 'R': cie.FdeEncoding = reader.Byte(); break;
                        case 'L': reader.Byte(); break; // the LSDA's encoding: the pointer sits in the FDE's augmentation data, skipped
                        case 'P':
                            if (!SkipPointer(ref reader, reader.Byte()))
                                return null;
                            break;
                        case 'S': cie.IsSignalFrame = true; break;
                        default: return null;
                    }
                }
                if (reader.Position > dataEnd)
                    return null;
                reader.Position = dataEnd;
            }
            if (reader.Failed || reader.Position > end)
                return null;
            cie.Program = reader.Position;
            cie.ProgramEnd = end;
            return cie;
        }
    }

    /// <summary>Bounds-checked little-endian reads; a read past the end sets <see cref="Failed"/> and yields zeros.</summary>
    private ref struct Reader(byte[] data, int position, int end)
    {
        private readonly ReadOnlySpan<byte> _data = data.AsSpan(0, Math.Min(end, data.Length));

        public int Position = position;
        public bool Failed;

        public byte Byte() => Take(1) ? _data[Position - 1] : (byte)0;

        public ushort UInt16() => Take(2) ? BinaryPrimitives.ReadUInt16LittleEndian(_data[(Position - 2)..]) : (ushort)0;

        public uint UInt32() => Take(4) ? BinaryPrimitives.ReadUInt32LittleEndian(_data[(Position - 4)..]) : 0;

        public ulong UInt64() => Take(8) ? BinaryPrimitives.ReadUInt64LittleEndian(_data[(Position - 8)..]) : 0;

        public void Skip(int count)
        {
            if (count < 0)
                Failed = true;
            else
                Take(count);
        }

        public ulong Uleb()
        {
            if (!Failed && ElfInternal.Leb128.TryReadUnsigned(_data, ref Position, out var value))
                return value;
            Failed = true;
            return 0;
        }

        public long Sleb()
        {
            if (!Failed && ElfInternal.Leb128.TryReadSigned(_data, ref Position, out var value))
                return value;
            Failed = true;
            return 0;
        }

        // An entry's length field (32-bit, or 0xffffffff and a 64-bit one); end is where the entry stops.
        public bool TryLength(out int end) => TryLength(Position, out end);

        public bool TryLength(int start, out int end)
        {
            end = 0;
            Position = start;
            ulong length = UInt32();
            if (length == 0xffffffff)
                length = UInt64();
            if (Failed || length > int.MaxValue)
                return false;
            end = (int)Math.Min((ulong)Position + length, int.MaxValue);
            return true;
        }

        private bool Take(int count)
        {
            if (Failed || Position > _data.Length - count)
            {
                Failed = true;
                return false;
            }
            Position += count;
            return true;
        }
    }
}
