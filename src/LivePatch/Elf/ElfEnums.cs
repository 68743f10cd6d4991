namespace LivePatch.Elf;

/// <summary>The kind of ELF file (<c>e_type</c>).</summary>
public enum ElfType : ushort
{
    /// <summary>No file type; never returned by a successful load.</summary>
    None = 0,

    /// <summary>A relocatable object (<c>ET_REL</c>), such as a <c>.o</c> file or a payload.</summary>
    Relocatable = 1,

    /// <summary>A position-dependent executable (<c>ET_EXEC</c>).</summary>
    Executable = 2,

    /// <summary>A shared object or position-independent executable (<c>ET_DYN</c>).</summary>
    SharedObject = 3,
}

/// <summary>The target architecture (<c>e_machine</c>); the reader accepts only x86-64.</summary>
public enum ElfMachine : ushort
{
    /// <summary>No machine; never returned by a successful load.</summary>
    None = 0,

    /// <summary>AMD x86-64 (<c>EM_X86_64</c>).</summary>
    X64 = 62,
}

/// <summary>Section types (<c>sh_type</c>); values not listed here are kept as their number.</summary>
public enum ElfSectionType : uint
{
    /// <summary>Inactive section header (<c>SHT_NULL</c>).</summary>
    Null = 0,

    /// <summary>Program-defined contents (<c>SHT_PROGBITS</c>).</summary>
    ProgBits = 1,

    /// <summary>Full symbol table (<c>SHT_SYMTAB</c>).</summary>
    SymbolTable = 2,

    /// <summary>String table (<c>SHT_STRTAB</c>).</summary>
    StringTable = 3,

    /// <summary>Relocations with explicit addends (<c>SHT_RELA</c>).</summary>
    Rela = 4,

    /// <summary>SysV symbol hash table (<c>SHT_HASH</c>).</summary>
    Hash = 5,

    /// <summary>Dynamic linking information (<c>SHT_DYNAMIC</c>).</summary>
    Dynamic = 6,

    /// <summary>Notes (<c>SHT_NOTE</c>).</summary>
    Note = 7,

    /// <summary>Occupies memory but no file bytes, like <c>.bss</c> (<c>SHT_NOBITS</c>).</summary>
    NoBits = 8,

    /// <summary>Relocations without addends (<c>SHT_REL</c>); not used on x86-64.</summary>
    Rel = 9,

    /// <summary>Reserved (<c>SHT_SHLIB</c>).</summary>
    ShLib = 10,

    /// <summary>Dynamic-linking symbol table (<c>SHT_DYNSYM</c>).</summary>
    DynamicSymbolTable = 11,

    /// <summary>Array of constructor pointers (<c>SHT_INIT_ARRAY</c>).</summary>
    InitArray = 14,

    /// <summary>Array of destructor pointers (<c>SHT_FINI_ARRAY</c>).</summary>
    FiniArray = 15,

    /// <summary>Array of pre-constructor pointers (<c>SHT_PREINIT_ARRAY</c>).</summary>
    PreInitArray = 16,

    /// <summary>Section group (<c>SHT_GROUP</c>).</summary>
    Group = 17,

    /// <summary>Extended section indexes of a symbol table (<c>SHT_SYMTAB_SHNDX</c>).</summary>
    SymbolTableSectionIndexes = 18,

    /// <summary>Compact relative relocations (<c>SHT_RELR</c>).</summary>
    Relr = 19,

    /// <summary>LLVM address-significance table (<c>SHT_LLVM_ADDRSIG</c>).</summary>
    LlvmAddressSignificance = 0x6fff4c03,

    /// <summary>GNU object attributes (<c>SHT_GNU_ATTRIBUTES</c>).</summary>
    GnuAttributes = 0x6ffffff5,

    /// <summary>GNU-style symbol hash table (<c>SHT_GNU_HASH</c>).</summary>
    GnuHash = 0x6ffffff6,

    /// <summary>Symbol version definitions (<c>SHT_GNU_verdef</c>).</summary>
    GnuVersionDefinitions = 0x6ffffffd,

    /// <summary>Symbol version requirements (<c>SHT_GNU_verneed</c>).</summary>
    GnuVersionNeeds = 0x6ffffffe,

    /// <summary>Symbol version table (<c>SHT_GNU_versym</c>).</summary>
    GnuVersionSymbols = 0x6fffffff,

    /// <summary>x86-64 unwind tables (<c>SHT_X86_64_UNWIND</c>).</summary>
    X64Unwind = 0x70000001,
}

/// <summary>Section attribute flags (<c>sh_flags</c>).</summary>
[Flags]
public enum ElfSectionAttributes : ulong
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>Writable at run time (<c>SHF_WRITE</c>).</summary>
    Write = 0x1,

    /// <summary>Occupies memory at run time (<c>SHF_ALLOC</c>).</summary>
    Alloc = 0x2,

    /// <summary>Contains executable instructions (<c>SHF_EXECINSTR</c>).</summary>
    ExecInstr = 0x4,

    /// <summary>Elements may be merged (<c>SHF_MERGE</c>).</summary>
    Merge = 0x10,

    /// <summary>Holds NUL-terminated strings (<c>SHF_STRINGS</c>).</summary>
    Strings = 0x20,

    /// <summary><c>sh_info</c> holds a section index (<c>SHF_INFO_LINK</c>).</summary>
    InfoLink = 0x40,

    /// <summary>Ordered after the section named by <c>sh_link</c> (<c>SHF_LINK_ORDER</c>).</summary>
    LinkOrder = 0x80,

    /// <summary>Needs OS-specific processing (<c>SHF_OS_NONCONFORMING</c>).</summary>
    OsNonConforming = 0x100,

    /// <summary>Member of a section group (<c>SHF_GROUP</c>).</summary>
    Group = 0x200,

    /// <summary>Holds thread-local data (<c>SHF_TLS</c>).</summary>
    Tls = 0x400,

    /// <summary>Contents are compressed (<c>SHF_COMPRESSED</c>).</summary>
    Compressed = 0x800,

    /// <summary>Must not be garbage-collected by the linker (<c>SHF_GNU_RETAIN</c>).</summary>
    GnuRetain = 0x200000,

    /// <summary>Placed in the large-model area (<c>SHF_X86_64_LARGE</c>).</summary>
    X64Large = 0x10000000,

    /// <summary>Excluded from linked output (<c>SHF_EXCLUDE</c>).</summary>
    Exclude = 0x80000000,
}

/// <summary>Program header (segment) types (<c>p_type</c>); values not listed are kept as their number.</summary>
public enum ElfSegmentType : uint
{
    /// <summary>Unused entry (<c>PT_NULL</c>).</summary>
    Null = 0,

    /// <summary>Loadable segment (<c>PT_LOAD</c>).</summary>
    Load = 1,

    /// <summary>Dynamic linking information (<c>PT_DYNAMIC</c>).</summary>
    Dynamic = 2,

    /// <summary>Path of the program interpreter (<c>PT_INTERP</c>).</summary>
    Interpreter = 3,

    /// <summary>Notes (<c>PT_NOTE</c>).</summary>
    Note = 4,

    /// <summary>Reserved (<c>PT_SHLIB</c>).</summary>
    ShLib = 5,

    /// <summary>The program header table itself (<c>PT_PHDR</c>).</summary>
    ProgramHeaders = 6,

    /// <summary>Thread-local storage template (<c>PT_TLS</c>).</summary>
    Tls = 7,

    /// <summary>Exception-frame header (<c>PT_GNU_EH_FRAME</c>).</summary>
    GnuEhFrame = 0x6474e550,

    /// <summary>Stack executability (<c>PT_GNU_STACK</c>).</summary>
    GnuStack = 0x6474e551,

    /// <summary>Read-only after relocation (<c>PT_GNU_RELRO</c>).</summary>
    GnuRelro = 0x6474e552,

    /// <summary>GNU property notes (<c>PT_GNU_PROPERTY</c>).</summary>
    GnuProperty = 0x6474e553,

    /// <summary>Simple-frame unwind data (<c>PT_GNU_SFRAME</c>).</summary>
    GnuSFrame = 0x6474e554,
}

/// <summary>Segment permission flags (<c>p_flags</c>).</summary>
[Flags]
public enum ElfSegmentPermissions : uint
{
    /// <summary>No access.</summary>
    None = 0,

    /// <summary>Executable (<c>PF_X</c>).</summary>
    Execute = 1,

    /// <summary>Writable (<c>PF_W</c>).</summary>
    Write = 2,

    /// <summary>Readable (<c>PF_R</c>).</summary>
    Read = 4,
}

/// <summary>Symbol binding, the high nibble of <c>st_info</c>.</summary>
public enum ElfSymbolBinding : byte
{
    /// <summary>Not visible outside its object file (<c>STB_LOCAL</c>).</summary>
    Local = 0,

    /// <summary>Visible to all objects being combined (<c>STB_GLOBAL</c>).</summary>
    Global = 1,

    /// <summary>Global with lower precedence (<c>STB_WEAK</c>).</summary>
    Weak = 2,

    /// <summary>Unique in the whole process (<c>STB_GNU_UNIQUE</c>).</summary>
    GnuUnique = 10,
}

/// <summary>Symbol type, the low nibble of <c>st_info</c>.</summary>
public enum ElfSymbolType : byte
{
    /// <summary>Unspecified (<c>STT_NOTYPE</c>).</summary>
    NoType = 0,

    /// <summary>A data object (<c>STT_OBJECT</c>).</summary>
    DataObject = 1,

    /// <summary>A function (<c>STT_FUNC</c>).</summary>
    Function = 2,

    /// <summary>A section; its name is empty and its section is the one it stands for (<c>STT_SECTION</c>).</summary>
    Section = 3,

    /// <summary>The source file name (<c>STT_FILE</c>).</summary>
    File = 4,

    /// <summary>An uninitialized common block (<c>STT_COMMON</c>).</summary>
    Common = 5,

    /// <summary>A thread-local variable (<c>STT_TLS</c>).</summary>
    Tls = 6,

    /// <summary>An indirect function resolved at load time (<c>STT_GNU_IFUNC</c>).</summary>
    GnuIndirectFunction = 10,
}

/// <summary>Symbol visibility, the low two bits of <c>st_other</c>.</summary>
public enum ElfSymbolVisibility : byte
{
    /// <summary>Visibility given by the binding (<c>STV_DEFAULT</c>).</summary>
    Default = 0,

    /// <summary>Processor-specific hidden (<c>STV_INTERNAL</c>).</summary>
    Internal = 1,

    /// <summary>Not visible to other components (<c>STV_HIDDEN</c>).</summary>
    Hidden = 2,

    /// <summary>Visible but not preemptible (<c>STV_PROTECTED</c>).</summary>
    Protected = 3,
}
