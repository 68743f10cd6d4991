using System.Buffers.Binary;
using System.Text;

namespace LivePatch.Elf.ElfInternal;

/// <summary>
/// Decodes and validates a whole ELF64 file at once, so that every accessor of the
/// resulting <see cref="ElfFile"/> is safe. Every count is checked against the file
/// length before anything is allocated from it.
/// </summary>
internal sealed class ElfParser
{
    private readonly ReadOnlyMemory<byte> _file;
    private ElfSection[] _sections = [];
    private SectionHeader _section0;
    private ulong _sectionTableOffset;

    public ElfParser(ReadOnlyMemory<byte> file) => _file = file;

    private ReadOnlySpan<byte> Bytes => _file.Span;

    private ulong Length => (ulong)_file.Length;

    public ElfFile Parse()
    {
        ReadIdentification();
        var type = ReadType();
        var entry = U64(ElfLayout.EEntry);
        ReadSectionTable();
        ValidateSections();
        var segments = ReadSegments();

        var symbolTables = new Dictionary<int, ElfSymbol[]>();
        foreach (var section in _sections)
        {
            if (section.Type is ElfSectionType.SymbolTable or ElfSectionType.DynamicSymbolTable)
            {
                symbolTables.Add(section.Index, ReadSymbols(section));
            }
        }

        var relocationSections = new List<ElfRelocationSection>();
        foreach (var section in _sections)
        {
            if (section.Type == ElfSectionType.Rela)
            {
                relocationSections.Add(ReadRelocations(section, symbolTables));
            }
        }

        var notes = ReadAllNotes(segments);
        return new ElfFile(_file, type, ElfMachine.X64, entry, _sections, segments, symbolTables, relocationSections, notes);
    }

    private void ReadIdentification()
    {
        if (Length < ElfLayout.HeaderSize)
        {
            throw new ElfFormatException($"file is 0x{Length:x} bytes, shorter than the 64-byte ELF64 header", 0);
        }

        var bytes = Bytes;
        if (bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F')
        {
            // Not quoted: the file may be anything a symlink points to (as root, a secret), and its bytes reach a terminal.
            throw new ElfFormatException("not an ELF file: it does not start with the ELF magic 7f 45 4c 46", 0);
        }

        var fileClass = bytes[ElfLayout.IdentClass];
        if (fileClass != 2)
        {
            var what = fileClass == 1 ? " (ELF32)" : "";
            throw new ElfFormatException($"EI_CLASS {fileClass}{what} is not ELFCLASS64 (2)", ElfLayout.IdentClass);
        }

        var data = bytes[ElfLayout.IdentData];
        if (data != 1)
        {
            var what = data == 2 ? " (big-endian)" : "";
            throw new ElfFormatException($"EI_DATA {data}{what} is not ELFDATA2LSB (1, little-endian)", ElfLayout.IdentData);
        }

        if (bytes[ElfLayout.IdentVersion] != 1)
        {
            throw new ElfFormatException($"EI_VERSION {bytes[ElfLayout.IdentVersion]} is not EV_CURRENT (1)", ElfLayout.IdentVersion);
        }
    }

    private ElfType ReadType()
    {
        var type = U16(ElfLayout.EType);
        if (type is not (1 or 2 or 3))
        {
            throw new ElfFormatException($"e_type {type} is not ET_REL (1), ET_EXEC (2) or ET_DYN (3)", ElfLayout.EType);
        }

        var machine = U16(ElfLayout.EMachine);
        if (machine != (ushort)ElfMachine.X64)
        {
            throw new ElfFormatException($"e_machine {machine} is not EM_X86_64 (62)", ElfLayout.EMachine);
        }

        var version = U32(ElfLayout.EVersion);
        if (version != 1)
        {
            throw new ElfFormatException($"e_version {version} is not EV_CURRENT (1)", ElfLayout.EVersion);
        }

        var headerSize = U16(ElfLayout.EEhSize);
        if (headerSize != ElfLayout.HeaderSize)
        {
            throw new ElfFormatException($"e_ehsize {headerSize} is not 64", ElfLayout.EEhSize);
        }

        return (ElfType)type;
    }

    private void ReadSectionTable()
    {
        var tableOffset = U64(ElfLayout.EShOff);
        var entrySize = U16(ElfLayout.EShEntSize);
        var headerCount = U16(ElfLayout.EShNum);
        var headerNameIndex = U16(ElfLayout.EShStrNdx);

        if (tableOffset == 0)
        {
            if (headerCount != 0)
            {
                throw new ElfFormatException($"e_shnum {headerCount} but e_shoff is 0 (no section header table)", ElfLayout.EShNum);
            }

            if (headerNameIndex != 0)
            {
                throw new ElfFormatException($"e_shstrndx {headerNameIndex} but e_shoff is 0 (no section header table)", ElfLayout.EShStrNdx);
            }

            return;
        }

        if (entrySize != ElfLayout.SectionHeaderSize)
        {
            throw new ElfFormatException($"e_shentsize {entrySize} is not 64, the size of an Elf64_Shdr", ElfLayout.EShEntSize);
        }

        if (tableOffset % 8 != 0)
        {
            throw new ElfFormatException($"e_shoff 0x{tableOffset:x} is misaligned (not a multiple of 8)", ElfLayout.EShOff);
        }

        RequireInFile(tableOffset, ElfLayout.SectionHeaderSize, ElfLayout.EShOff, "section header 0", "e_shoff", "header size");
        _sectionTableOffset = tableOffset;
        _section0 = ReadSectionHeader(tableOffset);

        ulong count = headerCount;
        long countField = ElfLayout.EShNum;
        if (headerCount == 0)
        {
            // Extended numbering: more than 0xff00 sections, the real count is section 0's sh_size.
            count = _section0.Size;
            countField = (long)tableOffset + ElfLayout.ShSize;
            if (count == 0)
            {
                throw new ElfFormatException("e_shnum is 0 (extended numbering) but section 0's sh_size is 0 too", countField);
            }
        }

        if (count > (Length - tableOffset) / ElfLayout.SectionHeaderSize)
        {
            throw new ElfFormatException(
                $"section header table: e_shoff 0x{tableOffset:x} + {count} headers of 64 bytes runs past end of file (0x{Length:x})",
                countField);
        }

        ulong nameIndex = headerNameIndex;
        long nameIndexField = ElfLayout.EShStrNdx;
        if (headerNameIndex == ElfLayout.ShnXIndex)
        {
            nameIndex = _section0.Link;
            nameIndexField = (long)tableOffset + ElfLayout.ShLink;
        }

        if (nameIndex >= count)
        {
            throw new ElfFormatException($"e_shstrndx {nameIndex} is out of range ({count} sections)", nameIndexField);
        }

        if (_section0.Type != (uint)ElfSectionType.Null)
        {
            throw new ElfFormatException($"section 0: sh_type {_section0.Type} is not SHT_NULL", (long)tableOffset + ElfLayout.ShType);
        }

        var headers = new SectionHeader[(int)count];
        for (var i = 0; i < headers.Length; i++)
        {
            headers[i] = ReadSectionHeader(SectionHeaderOffset(i));
        }

        var names = new StringTable(0, 0, "");
        if (nameIndex != 0)
        {
            var index = (int)nameIndex;
            var header = headers[index];
            var headerOffset = (long)SectionHeaderOffset(index);
            if (header.Type != (uint)ElfSectionType.StringTable)
            {
                throw new ElfFormatException(
                    $"section {index} (e_shstrndx): sh_type {header.Type} is not SHT_STRTAB", headerOffset + ElfLayout.ShType);
            }

            RequireInFile(header.Offset, header.Size, headerOffset + ElfLayout.ShOffset,
                $"section {index} (section-name string table)", "sh_offset", "sh_size");
            names = new StringTable(header.Offset, header.Size, $"the section-name string table (section {index})");
        }

        _sections = new ElfSection[headers.Length];
        for (var i = 0; i < headers.Length; i++)
        {
            var headerOffset = (long)SectionHeaderOffset(i);
            var name = nameIndex == 0 || i == 0 && headers[i].Name == 0
                ? ""
                : ReadString(names, headers[i].Name, headerOffset + ElfLayout.ShName, $"section {i}: sh_name");
            _sections[i] = new ElfSection(i, name, headerOffset, headers[i]);
        }
    }

    private ulong SectionHeaderOffset(int index) => _sectionTableOffset + ((ulong)index * ElfLayout.SectionHeaderSize);

    private SectionHeader ReadSectionHeader(ulong at) => new(
        U32(at + ElfLayout.ShName),
        U32(at + ElfLayout.ShType),
        U64(at + ElfLayout.ShFlags),
        U64(at + ElfLayout.ShAddr),
        U64(at + ElfLayout.ShOffset),
        U64(at + ElfLayout.ShSize),
        U32(at + ElfLayout.ShLink),
        U32(at + ElfLayout.ShInfo),
        U64(at + ElfLayout.ShAddrAlign),
        U64(at + ElfLayout.ShEntSize));

    private void ValidateSections()
    {
        var count = (uint)_sections.Length;
        for (var i = 1; i < _sections.Length; i++)
        {
            var section = _sections[i];
            var at = section.HeaderOffset;
            if (section.Type == ElfSectionType.Null)
            {
                continue;
            }

            if (section.HasFileData)
            {
                RequireInFile(section.Offset, section.Size, at + ElfLayout.ShOffset, section.ToString(), "sh_offset", "sh_size");
            }

            if (!IsPowerOfTwoOrZero(section.Alignment))
            {
                throw new ElfFormatException($"{section}: sh_addralign 0x{section.Alignment:x} is not a power of two", at + ElfLayout.ShAddrAlign);
            }

            if (section.Link >= count)
            {
                throw new ElfFormatException($"{section}: sh_link {section.Link} points past the last section ({count} sections)", at + ElfLayout.ShLink);
            }

            var infoIsIndex = section.Type is ElfSectionType.Rela or ElfSectionType.Rel
                || section.Flags.HasFlag(ElfSectionAttributes.InfoLink);
            if (infoIsIndex && section.Info >= count)
            {
                throw new ElfFormatException($"{section}: sh_info {section.Info} points past the last section ({count} sections)", at + ElfLayout.ShInfo);
            }

            switch (section.Type)
            {
                case ElfSectionType.SymbolTable or ElfSectionType.DynamicSymbolTable:
                    RequireTable(section, ElfLayout.SymbolSize, 8, "symbol");
                    RequireLinkType(section, "a string table (SHT_STRTAB)", ElfSectionType.StringTable);
                    break;
                case ElfSectionType.Rela:
                    RequireTable(section, ElfLayout.RelaSize, 8, "Elf64_Rela");
                    if (section.Link != 0)
                    {
                        RequireLinkType(section, "a symbol table", ElfSectionType.SymbolTable, ElfSectionType.DynamicSymbolTable);
                    }

                    break;
                case ElfSectionType.Rel:
                    RequireTable(section, ElfLayout.RelSize, 8, "Elf64_Rel");
                    break;
                case ElfSectionType.SymbolTableSectionIndexes:
                    RequireTable(section, 4, 4, "extended section index");
                    RequireLinkType(section, "a symbol table (SHT_SYMTAB)", ElfSectionType.SymbolTable);
                    break;
                default:
                    break;
            }
        }
    }

    private static void RequireTable(ElfSection section, uint entrySize, uint alignment, string entryName)
    {
        var at = section.HeaderOffset;
        if (section.EntrySize != entrySize)
        {
            throw new ElfFormatException(
                $"{section}: sh_entsize 0x{section.EntrySize:x} is wrong, an {entryName} entry is {entrySize} bytes", at + ElfLayout.ShEntSize);
        }

        if (section.Size % entrySize != 0)
        {
            throw new ElfFormatException(
                $"{section}: sh_size 0x{section.Size:x} is not a multiple of sh_entsize {entrySize}", at + ElfLayout.ShSize);
        }

        if (section.Offset % alignment != 0)
        {
            throw new ElfFormatException(
                $"{section}: sh_offset 0x{section.Offset:x} is misaligned (not a multiple of {alignment})", at + ElfLayout.ShOffset);
        }
    }

    private void RequireLinkType(ElfSection section, string expected, params ElfSectionType[] types)
    {
        var linked = _sections[section.Link];
        if (Array.IndexOf(types, linked.Type) < 0)
        {
            throw new ElfFormatException(
                $"{section}: sh_link {section.Link} names {linked}, which is not {expected}", section.HeaderOffset + ElfLayout.ShLink);
        }
    }

    private ElfSegment[] ReadSegments()
    {
        var tableOffset = U64(ElfLayout.EPhOff);
        var entrySize = U16(ElfLayout.EPhEntSize);
        ulong count = U16(ElfLayout.EPhNum);
        if (count == ElfLayout.PnXNum)
        {
            if (_sections.Length == 0)
            {
                throw new ElfFormatException("e_phnum is PN_XNUM (0xffff) but there is no section 0 to hold the real count", ElfLayout.EPhNum);
            }

            count = _section0.Info;
        }

        if (count == 0)
        {
            return [];
        }

        if (tableOffset == 0)
        {
            throw new ElfFormatException($"e_phnum {count} but e_phoff is 0 (no program header table)", ElfLayout.EPhOff);
        }

        if (entrySize != ElfLayout.ProgramHeaderSize)
        {
            throw new ElfFormatException($"e_phentsize {entrySize} is not 56, the size of an Elf64_Phdr", ElfLayout.EPhEntSize);
        }

        if (tableOffset % 8 != 0)
        {
            throw new ElfFormatException($"e_phoff 0x{tableOffset:x} is misaligned (not a multiple of 8)", ElfLayout.EPhOff);
        }

        if (tableOffset > Length || count > (Length - tableOffset) / ElfLayout.ProgramHeaderSize)
        {
            throw new ElfFormatException(
                $"program header table: e_phoff 0x{tableOffset:x} + {count} headers of 56 bytes runs past end of file (0x{Length:x})",
                ElfLayout.EPhOff);
        }

        var segments = new ElfSegment[(int)count];
        for (var i = 0; i < segments.Length; i++)
        {
            segments[i] = ReadSegment(i, tableOffset + ((ulong)i * ElfLayout.ProgramHeaderSize));
        }

        return segments;
    }

    private ElfSegment ReadSegment(int index, ulong at)
    {
        var segment = new ElfSegment
        {
            Index = index,
            Type = (ElfSegmentType)U32(at + ElfLayout.PType),
            Flags = (ElfSegmentPermissions)U32(at + ElfLayout.PFlags),
            Offset = U64(at + ElfLayout.POffset),
            VirtualAddress = U64(at + ElfLayout.PVAddr),
            PhysicalAddress = U64(at + ElfLayout.PPAddr),
            FileSize = U64(at + ElfLayout.PFileSz),
            MemorySize = U64(at + ElfLayout.PMemSz),
            Alignment = U64(at + ElfLayout.PAlign),
        };
        var what = $"segment {index} (type 0x{(uint)segment.Type:x})";
        var field = (long)at;
        // An empty segment holds no bytes wherever it says they start: debug files (objcopy --only-keep-debug, MiniDebugInfo)
        // keep the program headers of a file whose contents they dropped.
        if (segment.Type != ElfSegmentType.Null && segment.FileSize != 0)
        {
            RequireInFile(segment.Offset, segment.FileSize, field + ElfLayout.POffset, what, "p_offset", "p_filesz");
        }

        if (!IsPowerOfTwoOrZero(segment.Alignment))
        {
            throw new ElfFormatException($"{what}: p_align 0x{segment.Alignment:x} is not a power of two", field + ElfLayout.PAlign);
        }

        if (segment.Type == ElfSegmentType.Load)
        {
            if (segment.FileSize > segment.MemorySize)
            {
                throw new ElfFormatException(
                    $"{what}: p_filesz 0x{segment.FileSize:x} is larger than p_memsz 0x{segment.MemorySize:x}", field + ElfLayout.PFileSz);
            }

            if (segment.Alignment > 1 && segment.VirtualAddress % segment.Alignment != segment.Offset % segment.Alignment)
            {
                throw new ElfFormatException(
                    $"{what}: p_vaddr 0x{segment.VirtualAddress:x} and p_offset 0x{segment.Offset:x} are not congruent modulo p_align 0x{segment.Alignment:x}",
                    field + ElfLayout.PVAddr);
            }
        }

        return segment;
    }

    private ElfSymbol[] ReadSymbols(ElfSection table)
    {
        var count = (int)(table.Size / ElfLayout.SymbolSize);
        var strings = _sections[table.Link];
        var names = new StringTable(strings.Offset, strings.Size, strings.ToString());
        var extendedIndexes = Array.Find(_sections, s => s.Type == ElfSectionType.SymbolTableSectionIndexes && s.Link == table.Index);
        if (extendedIndexes != null && extendedIndexes.Size / 4 != (ulong)count)
        {
            throw new ElfFormatException(
                $"{extendedIndexes}: sh_size 0x{extendedIndexes.Size:x} holds {extendedIndexes.Size / 4} indexes but {table} has {count} symbols",
                extendedIndexes.HeaderOffset + ElfLayout.ShSize);
        }

        var symbols = new ElfSymbol[count];
        for (var i = 0; i < count; i++)
        {
            var at = table.Offset + ((ulong)i * ElfLayout.SymbolSize);
            var info = U8(at + ElfLayout.StInfo);
            var name = ReadString(names, U32(at + ElfLayout.StName), (long)at + ElfLayout.StName, $"{table}: symbol {i} st_name");
            uint sectionIndex = U16(at + ElfLayout.StShndx);
            if (sectionIndex == ElfLayout.ShnXIndex)
            {
                if (extendedIndexes == null)
                {
                    throw new ElfFormatException(
                        $"{table}: symbol {i} ({name}) has st_shndx SHN_XINDEX but no SHT_SYMTAB_SHNDX section belongs to the table",
                        (long)at + ElfLayout.StShndx);
                }

                sectionIndex = U32(extendedIndexes.Offset + ((ulong)i * 4));
                if (sectionIndex >= (uint)_sections.Length)
                {
                    throw new ElfFormatException(
                        $"{extendedIndexes}: extended section index {sectionIndex} of symbol {i} ({name}) points past the last section ({_sections.Length} sections)",
                        (long)(extendedIndexes.Offset + ((ulong)i * 4)));
                }
            }
            else if (sectionIndex < ElfLayout.ShnLoReserve && sectionIndex >= (uint)_sections.Length)
            {
                throw new ElfFormatException(
                    $"{table}: symbol {i} ({name}) st_shndx {sectionIndex} points past the last section ({_sections.Length} sections)",
                    (long)at + ElfLayout.StShndx);
            }

            symbols[i] = new ElfSymbol
            {
                Index = i,
                Name = name,
                Value = U64(at + ElfLayout.StValue),
                Size = U64(at + ElfLayout.StSize),
                Binding = (ElfSymbolBinding)(info >> 4),
                Type = (ElfSymbolType)(info & 0xf),
                Visibility = (ElfSymbolVisibility)(U8(at + ElfLayout.StOther) & 0x3),
                SectionIndex = sectionIndex,
            };
        }

        return symbols;
    }

    private ElfRelocationSection ReadRelocations(ElfSection section, Dictionary<int, ElfSymbol[]> symbolTables)
    {
        var target = section.Info != 0 ? _sections[section.Info] : null;
        var symbolTable = section.Link != 0 ? _sections[section.Link] : null;
        var symbols = symbolTable != null ? symbolTables[symbolTable.Index] : [];
        var count = (int)(section.Size / ElfLayout.RelaSize);
        var relocations = new ElfRelocation[count];
        for (var i = 0; i < count; i++)
        {
            var at = section.Offset + ((ulong)i * ElfLayout.RelaSize);
            var info = U64(at + 8);
            var symbolIndex = (uint)(info >> 32);
            if (symbolIndex != 0 && symbolIndex >= (uint)symbols.Length)
            {
                var reason = symbolTable == null
                    ? "but the section has no symbol table (sh_link 0)"
                    : $"past the end of {symbolTable} ({symbols.Length} symbols)";
                throw new ElfFormatException($"{section}: relocation {i} names symbol {symbolIndex} {reason}", (long)at + 8);
            }

            var symbol = symbolIndex < (uint)symbols.Length ? symbols[symbolIndex] : new ElfSymbol { Name = "" };
            relocations[i] = new ElfRelocation
            {
                Offset = U64(at),
                Type = (ElfRelocationType)(uint)info,
                SymbolIndex = symbolIndex,
                Symbol = symbol,
                SymbolName = DisplayName(symbol),
                Addend = (long)U64(at + 16),
            };
        }

        return new ElfRelocationSection(section, target, symbolTable, relocations);
    }

    private string DisplayName(in ElfSymbol symbol) =>
        symbol.Type == ElfSymbolType.Section && symbol.Name.Length == 0 && symbol.SectionIndex < (uint)_sections.Length
            ? _sections[symbol.SectionIndex].Name
            : symbol.Name;

    private ElfNote[] ReadAllNotes(ElfSegment[] segments)
    {
        var fromSections = new List<ElfNote>();
        foreach (var section in _sections)
        {
            if (section.Type == ElfSectionType.Note)
            {
                ReadNotes(section.Offset, section.Size, section.Alignment, section.ToString(), section.HeaderOffset + ElfLayout.ShOffset, fromSections);
            }
        }

        // Like readelf, notes come from sections when there are any, else from PT_NOTE segments;
        // both are validated.
        var fromSegments = new List<ElfNote>();
        foreach (var segment in segments)
        {
            if (segment.Type == ElfSegmentType.Note)
            {
                var field = (long)(U64(ElfLayout.EPhOff) + ((ulong)segment.Index * ElfLayout.ProgramHeaderSize)) + ElfLayout.POffset;
                ReadNotes(segment.Offset, segment.FileSize, segment.Alignment, $"segment {segment.Index} (PT_NOTE)", field, fromSegments);
            }
        }

        return _sections.Length > 0 ? [.. fromSections] : [.. fromSegments];
    }

    private void ReadNotes(ulong offset, ulong size, ulong alignment, string what, long offsetField, List<ElfNote> notes)
    {
        if (offset % 4 != 0)
        {
            throw new ElfFormatException($"{what}: notes at 0x{offset:x} are misaligned (not a multiple of 4)", offsetField);
        }

        // GNU property notes are 8-aligned; everything else on x86-64 pads to 4.
        ulong step = alignment == 8 ? 8UL : 4UL;
        ulong position = 0;
        while (position < size)
        {
            var at = offset + position;
            var left = size - position;
            if (left < ElfLayout.NoteHeaderSize)
            {
                throw new ElfFormatException(
                    $"{what}: note at 0x{at:x} needs a 12-byte header but only {left} bytes remain", (long)at);
            }

            var nameSize = U32(at);
            var descriptorSize = U32(at + 4);
            var type = U32(at + 8);
            var nameStart = position + ElfLayout.NoteHeaderSize;
            if (nameSize > size - nameStart)
            {
                throw new ElfFormatException(
                    $"{what}: note at 0x{at:x}: n_namesz 0x{nameSize:x} runs past the end of the notes (0x{size - nameStart:x} bytes left)", (long)at);
            }

            var descriptorStart = Math.Min(AlignUp(nameStart + nameSize, step), size);
            if (descriptorSize > size - descriptorStart)
            {
                throw new ElfFormatException(
                    $"{what}: note at 0x{at:x}: n_descsz 0x{descriptorSize:x} runs past the end of the notes (0x{size - descriptorStart:x} bytes left)",
                    (long)at + 4);
            }

            var nameBytes = Bytes.Slice((int)(offset + nameStart), (int)nameSize);
            var nul = nameBytes.IndexOf((byte)0);
            notes.Add(new ElfNote
            {
                Name = Encoding.UTF8.GetString(nul < 0 ? nameBytes : nameBytes[..nul]),
                Type = type,
                Descriptor = _file.Slice((int)(offset + descriptorStart), (int)descriptorSize),
            });
            position = Math.Min(AlignUp(descriptorStart + descriptorSize, step), size);
        }
    }

    private string ReadString(in StringTable table, uint index, long field, string what)
    {
        if (index >= table.Size)
        {
            throw new ElfFormatException($"{what} 0x{index:x} is past the end of {table.Description} (size 0x{table.Size:x})", field);
        }

        var rest = Bytes.Slice((int)(table.Offset + index), (int)(table.Size - index));
        var nul = rest.IndexOf((byte)0);
        if (nul < 0)
        {
            throw new ElfFormatException($"{what} 0x{index:x}: the string in {table.Description} is not NUL-terminated", field);
        }

        return nul == 0 ? "" : Encoding.UTF8.GetString(rest[..nul]);
    }

    private void RequireInFile(ulong offset, ulong size, long field, string what, string offsetName, string sizeName)
    {
        if (offset > Length || size > Length - offset)
        {
            throw new ElfFormatException(
                $"{what}: {offsetName} 0x{offset:x} + {sizeName} 0x{size:x} runs past end of file (0x{Length:x})", field);
        }
    }

    private static bool IsPowerOfTwoOrZero(ulong value) => (value & (value - 1)) == 0;

    private static ulong AlignUp(ulong value, ulong step) => (value + step - 1) & ~(step - 1);

    // Every caller has validated its range already; the check is a last line of defence
    // that keeps a reader bug from surfacing as anything but ElfFormatException.
    private void RequireReadable(ulong at, int size)
    {
        if (at > Length || (ulong)size > Length - at)
        {
            throw new ElfFormatException($"read of {size} bytes at 0x{at:x} runs past end of file (0x{Length:x})", (long)Math.Min(at, Length));
        }
    }

    private byte U8(ulong at)
    {
        RequireReadable(at, 1);
        return Bytes[(int)at];
    }

    private ushort U16(ulong at)
    {
        RequireReadable(at, 2);
        return BinaryPrimitives.ReadUInt16LittleEndian(Bytes[(int)at..]);
    }

    private uint U32(ulong at)
    {
        RequireReadable(at, 4);
        return BinaryPrimitives.ReadUInt32LittleEndian(Bytes[(int)at..]);
    }

    private ulong U64(ulong at)
    {
        RequireReadable(at, 8);
        return BinaryPrimitives.ReadUInt64LittleEndian(Bytes[(int)at..]);
    }

    /// <summary>Where a string table lies in the file, already checked to be inside it.</summary>
    private readonly record struct StringTable(ulong Offset, ulong Size, string Description);
}
