namespace LivePatch.Elf.ElfInternal;

/// <summary>Sizes and field offsets of the ELF64 structures the reader decodes.</summary>
internal static class ElfLayout
{
    public const int HeaderSize = 64;
    public const int SectionHeaderSize = 64;
    public const int ProgramHeaderSize = 56;
    public const int SymbolSize = 24;
    public const int RelaSize = 24;
    public const int RelSize = 16;
    public const int NoteHeaderSize = 12;

    // Elf64_Ehdr
    public const int IdentClass = 4;
    public const int IdentData = 5;
    public const int IdentVersion = 6;
    public const int EType = 16;
    public const int EMachine = 18;
    public const int EVersion = 20;
    public const int EEntry = 24;
    public const int EPhOff = 32;
    public const int EShOff = 40;
    public const int EEhSize = 52;
    public const int EPhEntSize = 54;
    public const int EPhNum = 56;
    public const int EShEntSize = 58;
    public const int EShNum = 60;
    public const int EShStrNdx = 62;

    // Elf64_Shdr
    public const int ShName = 0;
    public const int ShType = 4;
    public const int ShFlags = 8;
    public const int ShAddr = 16;
    public const int ShOffset = 24;
    public const int ShSize = 32;
    public const int ShLink = 40;
    public const int ShInfo = 44;
    public const int ShAddrAlign = 48;
    public const int ShEntSize = 56;

    // Elf64_Phdr
    public const int PType = 0;
    public const int PFlags = 4;
    public const int POffset = 8;
    public const int PVAddr = 16;
    public const int PPAddr = 24;
    public const int PFileSz = 32;
    public const int PMemSz = 40;
    public const int PAlign = 48;

    // Elf64_Sym
    public const int StName = 0;
    public const int StInfo = 4;
    public const int StOther = 5;
    public const int StShndx = 6;
    public const int StValue = 8;
    public const int StSize = 16;

    public const ushort ShnUndef = 0;
    public const ushort ShnLoReserve = 0xff00;
    public const ushort ShnXIndex = 0xffff;
    public const ushort PnXNum = 0xffff;
    public const uint NtGnuBuildId = 3;
}
