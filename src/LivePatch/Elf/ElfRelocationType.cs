namespace LivePatch.Elf;

/// <summary>x86-64 relocation types (low 32 bits of <c>r_info</c>); other values are kept as their number.</summary>
public enum ElfRelocationType : uint
{
    /// <summary><c>R_X86_64_NONE</c>: no relocation.</summary>
    None = 0,

    /// <summary><c>R_X86_64_64</c>: S + A, 64 bits.</summary>
    Direct64 = 1,

    /// <summary><c>R_X86_64_PC32</c>: S + A - P, 32 bits signed.</summary>
    Pc32 = 2,

    /// <summary><c>R_X86_64_GOT32</c>: G + A, 32 bits.</summary>
    Got32 = 3,

    /// <summary><c>R_X86_64_PLT32</c>: L + A - P, 32 bits signed.</summary>
    Plt32 = 4,

    /// <summary><c>R_X86_64_COPY</c>: copy the symbol at run time.</summary>
    Copy = 5,

    /// <summary><c>R_X86_64_GLOB_DAT</c>: set a GOT entry to S.</summary>
    GlobalData = 6,

    /// <summary><c>R_X86_64_JUMP_SLOT</c>: set a PLT jump slot to S.</summary>
    JumpSlot = 7,

    /// <summary><c>R_X86_64_RELATIVE</c>: B + A.</summary>
    Relative = 8,

    /// <summary><c>R_X86_64_GOTPCREL</c>: G + GOT + A - P, 32 bits signed.</summary>
    GotPcRel = 9,

    /// <summary><c>R_X86_64_32</c>: S + A, 32 bits zero-extended.</summary>
    Direct32 = 10,

    /// <summary><c>R_X86_64_32S</c>: S + A, 32 bits sign-extended.</summary>
    Direct32Signed = 11,

    /// <summary><c>R_X86_64_16</c>: S + A, 16 bits.</summary>
    Direct16 = 12,

    /// <summary><c>R_X86_64_PC16</c>: S + A - P, 16 bits.</summary>
    Pc16 = 13,

    /// <summary><c>R_X86_64_8</c>: S + A, 8 bits.</summary>
    Direct8 = 14,

    /// <summary><c>R_X86_64_PC8</c>: S + A - P, 8 bits.</summary>
    Pc8 = 15,

    /// <summary><c>R_X86_64_DTPMOD64</c>: TLS module id.</summary>
    DtpMod64 = 16,

    /// <summary><c>R_X86_64_DTPOFF64</c>: offset in the TLS block.</summary>
    DtpOff64 = 17,

    /// <summary><c>R_X86_64_TPOFF64</c>: offset from the thread pointer.</summary>
    TpOff64 = 18,

    /// <summary><c>R_X86_64_TLSGD</c>: PC-relative GOT entry for general-dynamic TLS.</summary>
    TlsGd = 19,

    /// <summary><c>R_X86_64_TLSLD</c>: PC-relative GOT entry for local-dynamic TLS.</summary>
    TlsLd = 20,

    /// <summary><c>R_X86_64_DTPOFF32</c>: 32-bit offset in the TLS block.</summary>
    DtpOff32 = 21,

    /// <summary><c>R_X86_64_GOTTPOFF</c>: PC-relative GOT entry holding a thread-pointer offset.</summary>
    GotTpOff = 22,

    /// <summary><c>R_X86_64_TPOFF32</c>: 32-bit offset from the thread pointer.</summary>
    TpOff32 = 23,

    /// <summary><c>R_X86_64_PC64</c>: S + A - P, 64 bits.</summary>
    Pc64 = 24,

    /// <summary><c>R_X86_64_GOTOFF64</c>: S + A - GOT, 64 bits.</summary>
    GotOff64 = 25,

    /// <summary><c>R_X86_64_GOTPC32</c>: GOT + A - P, 32 bits.</summary>
    GotPc32 = 26,

    /// <summary><c>R_X86_64_SIZE32</c>: Z + A, 32 bits.</summary>
    Size32 = 32,

    /// <summary><c>R_X86_64_SIZE64</c>: Z + A, 64 bits.</summary>
    Size64 = 33,

    /// <summary><c>R_X86_64_GOTPC32_TLSDESC</c>: PC-relative GOT entry of a TLS descriptor.</summary>
    GotPc32TlsDesc = 34,

    /// <summary><c>R_X86_64_TLSDESC_CALL</c>: marks the call through a TLS descriptor.</summary>
    TlsDescCall = 35,

    /// <summary><c>R_X86_64_TLSDESC</c>: a TLS descriptor, 128 bits.</summary>
    TlsDesc = 36,

    /// <summary><c>R_X86_64_IRELATIVE</c>: the result of calling the resolver at B + A.</summary>
    IRelative = 37,

    /// <summary><c>R_X86_64_GOTPCRELX</c>: relaxable GOTPCREL.</summary>
    GotPcRelX = 41,

    /// <summary><c>R_X86_64_REX_GOTPCRELX</c>: relaxable GOTPCREL after a REX prefix.</summary>
    RexGotPcRelX = 42,
}
