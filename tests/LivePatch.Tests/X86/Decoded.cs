using Iced.Intel;

namespace LivePatch.Tests.X86;

/// <summary>Decodes test bytes with Iced, to check what our encoders wrote.</summary>
internal static class Decoded
{
    public static List<Instruction> All(byte[] code, ulong address)
    {
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code), address);
        var instructions = new List<Instruction>();
        while (decoder.IP < address + (ulong)code.Length)
        {
            decoder.Decode(out var instruction);
            instructions.Add(instruction);
        }
        return instructions;
    }

    public static byte[] Hex(string text) => Convert.FromHexString(text.Replace(" ", "", StringComparison.Ordinal));

    public static string ToHex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);
}
