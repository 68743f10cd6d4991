using Iced.Intel;

namespace LivePatch.X86.Internal;

/// <summary>Formats instructions for messages the way objdump and GNU as write them.</summary>
internal static class InstructionText
{
    public static string Format(in Instruction instruction)
    {
        var formatter = new GasFormatter();
        formatter.Options.UppercaseHex = false;
        formatter.Options.BranchLeadingZeros = false;
        formatter.Options.SpaceAfterOperandSeparator = true;
        var output = new StringOutput();
        formatter.Format(instruction, output);
        return $"'{output.ToStringAndReset()}' at 0x{instruction.IP:x}";
    }
}
