using LivePatch.Elf;
using LivePatch.Elf.ElfInternal;

namespace LivePatch.Payloads;

/// <summary>
/// Validates, when a payload is loaded, everything of its object file the layout and the linker rely on, as the ELF
/// reader validates a file: once this passed, laying out and linking can fail only for reasons of the target (an
/// unknown symbol, a relocation out of reach), never on the file's contents. Each refusal is one
/// <see cref="PayloadException"/> naming the section, symbol or relocation and the field that is wrong.
/// </summary>
internal static class PayloadValidator
{
    /// <summary>
    /// The largest alignment a loaded section or common symbol may ask for: a page. Regions are mapped page-aligned,
    /// so anything above could not be honoured; gcc asks that much only for <c>aligned(4096)</c>.
    /// </summary>
    public const ulong MaxAlignment = 4096;

    /// <summary>Refuses the object unless its names, loaded sections, symbols and relocations are what the linker handles.</summary>
    /// <exception cref="PayloadException">Something is wrong; the message says what and where.</exception>
    public static void Validate(ElfFile elf, string file)
    {
        var symbolTable = elf.Sections.FirstOrDefault(s => s.Type == ElfSectionType.SymbolTable)
            ?? throw new PayloadException(file, "no symbol table (.symtab): the object was stripped");
        foreach (var section in elf.Sections)
        {
            RequirePrintable(file, section.Name, $"the name of section {section.Index}");
            if (PayloadLayout.IsLoaded(section))
            {
                RequireLoadable(file, section);
            }
        }

        foreach (var symbol in elf.Symbols)
        {
            RequirePrintable(file, symbol.Name, $"the name of symbol {symbol.Index}");
        }

        // Relocation types first: an unsupported one names the code that needs it, the clearest refusal.
        var placed = new List<(ElfSection Target, ElfRelocation Relocation)>();
        foreach (var relocations in elf.RelocationSections)
        {
            var target = relocations.TargetSection;
            if (target == null || !PayloadLayout.IsLoaded(target) && target.Name != Payload.RecordSection)
            {
                continue;
            }

            if (relocations.SymbolTable?.Index != symbolTable.Index)
            {
                throw new PayloadException(file,
                    $"{relocations.Section.Name}: sh_link {relocations.Section.Link} names {relocations.SymbolTable?.ToString() ?? "no section"}, not the symbol table {symbolTable}");
            }

            if (target.Name == Payload.RecordSection)
            {
                continue; // the records' own reader checks each of their relocations
            }

            foreach (var relocation in relocations.Relocations)
            {
                PayloadLayout.RequireSupported(file, target, relocation);
                placed.Add((target, relocation));
            }
        }

        foreach (var symbol in elf.Symbols)
        {
            RequireSymbol(elf, file, symbol);
        }

        foreach (var (target, relocation) in placed)
        {
            RequireRelocationSymbol(elf, file, target, relocation);
        }

        foreach (var section in elf.Sections)
        {
            if (PayloadLayout.IsLoaded(section) && section.Flags.HasFlag(ElfSectionAttributes.Tls))
            {
                throw new PayloadException(file, $"thread-local section {section.Name} is not supported: a payload cannot define __thread variables");
            }
        }

        foreach (var section in elf.Sections)
        {
            if (section.Type == ElfSectionType.Rel && section.Info < elf.Sections.Count && PayloadLayout.IsLoaded(elf.Sections[(int)section.Info]))
            {
                throw new PayloadException(file, $"{section.Name}: SHT_REL relocations (without addends) are not supported; x86-64 objects use SHT_RELA");
            }
        }
    }

    /// <summary>Refuses a name the messages could not print on one line: control characters (a newline, an escape).</summary>
    public static void RequirePrintable(string file, string name, string what)
    {
        if (PrintableText.HasControl(name))
        {
            throw new PayloadException(file, $"{what} holds the control character U+{(int)name.First(char.IsControl):X4} (\"{PrintableText.Escape(name)}\")");
        }
    }

    private static void RequireLoadable(string file, ElfSection section)
    {
        var at = $"section {section.Index} ({section.Name})";
        if (section.Type is not (ElfSectionType.ProgBits or ElfSectionType.NoBits or ElfSectionType.InitArray or ElfSectionType.FiniArray or ElfSectionType.PreInitArray))
        {
            throw new PayloadException(file, $"{at} of type {section.Type} has SHF_ALLOC in sh_flags 0x{(ulong)section.Flags:x}: a payload loads only PROGBITS, NOBITS and init/fini arrays");
        }

        if (section.Type == ElfSectionType.NoBits && section.Flags.HasFlag(ElfSectionAttributes.ExecInstr) && section.Size > 0)
        {
            throw new PayloadException(file, $"{at} is executable (SHF_EXECINSTR in sh_flags 0x{(ulong)section.Flags:x}) but NOBITS: it holds no code");
        }

        if (section.Alignment > MaxAlignment)
        {
            throw new PayloadException(file, $"{at}: sh_addralign 0x{section.Alignment:x} is larger than a page (0x{MaxAlignment:x}), the most a payload section may ask for");
        }

        if (section.Size > PayloadLayout.MaxRegionSize)
        {
            throw new PayloadException(file, $"{at}: sh_size 0x{section.Size:x} is larger than the 0x{PayloadLayout.MaxRegionSize:x} bytes a payload may use");
        }
    }

    private static void RequireSymbol(ElfFile elf, string file, ElfSymbol symbol)
    {
        var what = $"symbol {symbol.Index} ('{symbol.Name}')";
        switch (symbol.SectionIndex)
        {
            case ElfSymbol.UndefinedSection:
            case ElfSymbol.AbsoluteSection:
                return;
            case ElfSymbol.CommonSection:
                // For a common symbol st_value holds the alignment.
                if (!ulong.IsPow2(symbol.Value) || symbol.Value > MaxAlignment)
                {
                    throw new PayloadException(file, $"common {what}: its alignment (st_value) 0x{symbol.Value:x} is not a power of two up to a page (0x{MaxAlignment:x})");
                }

                if (symbol.Size > PayloadLayout.MaxRegionSize)
                {
                    throw new PayloadException(file, $"common {what}: st_size 0x{symbol.Size:x} is larger than the 0x{PayloadLayout.MaxRegionSize:x} bytes a payload may use");
                }

                return;
            default:
                break;
        }

        if (symbol.SectionIndex >= elf.Sections.Count)
        {
            throw new PayloadException(file, $"{what}: st_shndx 0x{symbol.SectionIndex:x} is a reserved section index the linker does not know");
        }

        var section = elf.Sections[(int)symbol.SectionIndex];
        if (symbol.Type is ElfSymbolType.Tls or ElfSymbolType.GnuIndirectFunction)
        {
            throw new PayloadException(file, $"{what} is of type {symbol.Type}: a payload cannot define thread-local variables or GNU indirect functions");
        }

        if (symbol.Type == ElfSymbolType.Function && (!PayloadLayout.IsLoaded(section) || !section.Flags.HasFlag(ElfSectionAttributes.ExecInstr)))
        {
            throw new PayloadException(file,
                $"function {what} lies in section {section.Index} ({section.Name}), which is not loaded executable code (sh_flags 0x{(ulong)section.Flags:x}: SHF_ALLOC and SHF_EXECINSTR needed)");
        }

        if (PayloadLayout.IsLoaded(section) && symbol.Type != ElfSymbolType.Section
            && (symbol.Value > section.Size || symbol.Size > section.Size - symbol.Value))
        {
            throw new PayloadException(file,
                $"{what}: st_value 0x{symbol.Value:x} + st_size 0x{symbol.Size:x} runs past the end of section {section.Index} ({section.Name}, sh_size 0x{section.Size:x})");
        }

        if (symbol.Type == ElfSymbolType.Function && symbol.Value >= section.Size)
        {
            throw new PayloadException(file, $"function {what}: st_value 0x{symbol.Value:x} is at or past the end of section {section.Index} ({section.Name}, sh_size 0x{section.Size:x})");
        }
    }

    private static void RequireRelocationSymbol(ElfFile elf, string file, ElfSection target, ElfRelocation relocation)
    {
        if (relocation.SymbolIndex == 0 || relocation.Type == ElfRelocationType.None)
        {
            return;
        }

        var symbol = relocation.Symbol;
        var where = $"relocation {relocation.TypeName} at {target.Name}+0x{relocation.Offset:x}";
        if (symbol.SectionIndex == ElfSymbol.UndefinedSection && symbol.Name.Length == 0)
        {
            throw new PayloadException(file, $"{where} refers to symbol {relocation.SymbolIndex}, undefined and without a name");
        }

        if (symbol.SectionIndex is not (ElfSymbol.UndefinedSection or ElfSymbol.AbsoluteSection or ElfSymbol.CommonSection)
            && !PayloadLayout.IsLoaded(elf.Sections[(int)symbol.SectionIndex]))
        {
            throw new PayloadException(file,
                $"'{relocation.SymbolName}' referenced from {target.Name}+0x{relocation.Offset:x} lies in {elf.Sections[(int)symbol.SectionIndex].Name}, which is not loaded");
        }
    }
}
