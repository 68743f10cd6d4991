using System.Buffers.Binary;
using LivePatch.Elf;

namespace LivePatch.Tests.Payloads;

/// <summary>Reads and changes one field of a payload object's section headers or symbols, found by name.</summary>
internal static class PayloadBytes
{
    public static ElfSection Section(byte[] bytes, string name) => ElfFile.Parse((byte[])bytes.Clone()).FindSection(name) ?? throw new InvalidOperationException($"no {name}");

    public static int SectionIndex(byte[] bytes, string name) => Section(bytes, name).Index;

    public static ulong SectionField(byte[] bytes, string name, int field) =>
        BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan((int)Section(bytes, name).HeaderOffset + field));

    public static void SetSectionField(byte[] bytes, string name, int field, ulong value) =>
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan((int)Section(bytes, name).HeaderOffset + field), value);

    public static uint SymbolIndex(byte[] bytes, Func<ElfSymbol, bool> which, string what) =>
        (uint)(ElfFile.Parse((byte[])bytes.Clone()).Symbols.FirstOrDefault(which) is { Name: not null } symbol ? symbol.Index : throw new InvalidOperationException($"no {what}"));

    public static void SetSymbolField(byte[] bytes, string name, int field, int width, ulong value)
    {
        var table = Section(bytes, ".symtab");
        var at = (int)table.Offset + ((int)SymbolIndex(bytes, s => s.Name == name, name) * 24) + field;
        if (width == 2)
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(at), (ushort)value);
        else
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), value);
    }
}
