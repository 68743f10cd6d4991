namespace LivePatch.Elf.ElfInternal;

/// <summary>The raw fields of one <c>Elf64_Shdr</c>, before names are resolved.</summary>
internal readonly record struct SectionHeader(
    uint Name, uint Type, ulong Flags, ulong Address, ulong Offset, ulong Size,
    uint Link, uint Info, ulong Alignment, ulong EntrySize);
