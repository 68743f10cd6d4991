namespace LivePatch.Elf;

/// <summary>A RELA section with its entries, the section they patch and the symbol table they refer to.</summary>
public sealed class ElfRelocationSection
{
    internal ElfRelocationSection(ElfSection section, ElfSection? targetSection, ElfSection? symbolTable, ElfRelocation[] relocations)
    {
        Section = section;
        TargetSection = targetSection;
        SymbolTable = symbolTable;
        Relocations = relocations;
    }

    /// <summary>The <see cref="ElfSectionType.Rela"/> section itself.</summary>
    public ElfSection Section { get; }

    /// <summary>The section the relocations apply to (<c>sh_info</c>), or null when they apply to addresses (<c>.rela.dyn</c>).</summary>
    public ElfSection? TargetSection { get; }

    /// <summary>The symbol table the entries index (<c>sh_link</c>), or null when the section names none.</summary>
    public ElfSection? SymbolTable { get; }

    /// <summary>The entries in file order.</summary>
    public IReadOnlyList<ElfRelocation> Relocations { get; }
}
