using LivePatch.Elf.ElfInternal;

namespace LivePatch.Elf;

/// <summary>A function's code inlined into another, as DWARF records it (a <c>DW_TAG_inlined_subroutine</c>).</summary>
/// <param name="Function">The inlined function: the linkage name of its abstract origin, or its name when it has none (C).</param>
/// <param name="Address">
/// Where the inlined code starts, at its link-time address: its entry pc, its low pc, or else the start of the
/// function it lies in; 0 when DWARF says none of them.
/// </param>
public readonly record struct DwarfInlinedCopy(string Function, ulong Address);

/// <summary>What a file's DWARF says about inlined copies of some functions.</summary>
/// <param name="Version">The highest DWARF version among its compilation units (2 to 5).</param>
/// <param name="Copies">Every inlined copy of the functions asked for, in the order of <c>.debug_info</c>.</param>
public sealed record DwarfInlineScan(int Version, IReadOnlyList<DwarfInlinedCopy> Copies)
{
    /// <summary>True when some units are skeletons of split DWARF (<c>-gsplit-dwarf</c>): their entries lie in <c>.dwo</c> files, not read.</summary>
    public bool SplitUnits { get; init; }
}

/// <summary>
/// Finds where functions were inlined from a file's <c>.debug_info</c> (DWARF 2 to 5, zlib-compressed sections
/// included): it walks every compilation unit's entries and reads only names, abstract origins and start addresses.
/// </summary>
public static class DwarfInlines
{
    /// <summary>
    /// The inlined copies of the functions named in <paramref name="functions"/> (symbol names: the linkage name of a
    /// C++ function, the name of a C one); null when <paramref name="elf"/> has no <c>.debug_info</c>.
    /// </summary>
    /// <exception cref="ElfFormatException">
    /// The DWARF is malformed, compressed otherwise than with zlib, or uses a form or unit type this reader does not know.
    /// </exception>
    public static DwarfInlineScan? Find(ElfFile elf, IReadOnlySet<string> functions)
    {
        ArgumentNullException.ThrowIfNull(elf);
        ArgumentNullException.ThrowIfNull(functions);
        return elf.FindSection(".debug_info") is null ? null : new DwarfReader(elf).FindInlined(functions);
    }
}
