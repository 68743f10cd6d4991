using System.Globalization;

namespace LivePatch.Elf.ElfInternal;

/// <summary>psABI names of x86-64 relocation types, spelled as readelf prints them.</summary>
internal static class RelocationTypeNames
{
    public static string Of(ElfRelocationType type) => type switch
    {
        ElfRelocationType.None => "R_X86_64_NONE",
        ElfRelocationType.Direct64 => "R_X86_64_64",
        ElfRelocationType.Pc32 => "R_X86_64_PC32",
        ElfRelocationType.Got32 => "R_X86_64_GOT32",
        ElfRelocationType.Plt32 => "R_X86_64_PLT32",
        ElfRelocationType.Copy => "R_X86_64_COPY",
        ElfRelocationType.GlobalData => "R_X86_64_GLOB_DAT",
        ElfRelocationType.JumpSlot => "R_X86_64_JUMP_SLOT",
        ElfRelocationType.Relative => "R_X86_64_RELATIVE",
        ElfRelocationType.GotPcRel => "R_X86_64_GOTPCREL",
        ElfRelocationType.Direct32 => "R_X86_64_32",
        ElfRelocationType.Direct32Signed => "R_X86_64_32S",
        ElfRelocationType.Direct16 => "R_X86_64_16",
        ElfRelocationType.Pc16 => "R_X86_64_PC16",
        ElfRelocationType.Direct8 => "R_X86_64_8",
        ElfRelocationType.Pc8 => "R_X86_64_PC8",
        ElfRelocationType.DtpMod64 => "R_X86_64_DTPMOD64",
        ElfRelocationType.DtpOff64 => "R_X86_64_DTPOFF64",
        ElfRelocationType.TpOff64 => "R_X86_64_TPOFF64",
        ElfRelocationType.TlsGd => "R_X86_64_TLSGD",
        ElfRelocationType.TlsLd => "R_X86_64_TLSLD",
        ElfRelocationType.DtpOff32 => "R_X86_64_DTPOFF32",
        ElfRelocationType.GotTpOff => "R_X86_64_GOTTPOFF",
        ElfRelocationType.TpOff32 => "R_X86_64_TPOFF32",
        ElfRelocationType.Pc64 => "R_X86_64_PC64",
        ElfRelocationType.GotOff64 => "R_X86_64_GOTOFF64",
        ElfRelocationType.GotPc32 => "R_X86_64_GOTPC32",
        ElfRelocationType.Size32 => "R_X86_64_SIZE32",
        ElfRelocationType.Size64 => "R_X86_64_SIZE64",
        ElfRelocationType.GotPc32TlsDesc => "R_X86_64_GOTPC32_TLSDESC",
        ElfRelocationType.TlsDescCall => "R_X86_64_TLSDESC_CALL",
        ElfRelocationType.TlsDesc => "R_X86_64_TLSDESC",
        ElfRelocationType.IRelative => "R_X86_64_IRELATIVE",
        ElfRelocationType.GotPcRelX => "R_X86_64_GOTPCRELX",
        ElfRelocationType.RexGotPcRelX => "R_X86_64_REX_GOTPCRELX",
        _ => "R_X86_64_" + ((uint)type).ToString(CultureInfo.InvariantCulture),
    };
}
