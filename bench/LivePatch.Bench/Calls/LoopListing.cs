using Iced.Intel;
using LivePatch.Elf;

namespace LivePatch.Bench.Calls;

/// <summary>
/// The instructions each timed loop runs per iteration, disassembled (GNU syntax) from the target's memory as it is
/// when measured, with the program's symbols for addresses: what every row of the benchmark really executes.
/// </summary>
internal sealed class LoopListing : ISymbolResolver
{
    private readonly CallsTarget _target;
    private readonly ElfFile _file;
    private readonly ulong _bias;
    private readonly List<(ulong Address, ulong Size, string Name)> _symbols;

    public LoopListing(CallsTarget target, string executable)
    {
        _target = target;
        _file = ElfFile.Load(executable);
        _bias = target.NativeIdentity - Symbol("native_identity").Value;
        _symbols = [.. _file.Symbols
            .Where(s => s.Value != 0 && s.Name.Length > 0 && s.Type is ElfSymbolType.Function or ElfSymbolType.DataObject)
            .Select(s => (s.Value + _bias, s.Size, s.Name))
            .OrderBy(s => s.Item1)];
    }

    /// <summary>The body of the loop of function <paramref name="function"/>: from its backward branch's target to that branch.</summary>
    public IReadOnlyList<string> LoopBody(string function)
    {
        var symbol = Symbol(function);
        var instructions = Decode(symbol.Value + _bias, checked((int)symbol.Size));
        var back = instructions.Select(i => i.Instruction).LastOrDefault(i => i.FlowControl == FlowControl.ConditionalBranch && i.NearBranchTarget < i.IP);
        if (back.Code == Code.INVALID)
            throw new InvalidOperationException($"{function} in the calls target has no loop (no backward conditional branch)");
        return Format(instructions.Where(i => i.Instruction.IP >= back.NearBranchTarget && i.Instruction.IP <= back.IP));
    }

    /// <summary>A small function without a size in the symbol table (a retpoline thunk): its instructions up to the first <c>ret</c>.</summary>
    public IReadOnlyList<string> UpToReturn(string function)
    {
        var instructions = Decode(Symbol(function).Value + _bias, 32);
        var end = instructions.FindIndex(i => i.Instruction.FlowControl == FlowControl.Return);
        if (end < 0)
            throw new InvalidOperationException($"{function} in the calls target has no ret in its first 32 bytes");
        return Format(instructions.Take(end + 1));
    }

    private List<(Instruction Instruction, byte[] Bytes)> Decode(ulong address, int length)
    {
        var bytes = _target.ReadMemory(address, length);
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), address);
        var instructions = new List<(Instruction, byte[])>();
        while (decoder.IP < address + (ulong)length)
        {
            var offset = (int)(decoder.IP - address);
            decoder.Decode(out var instruction);
            instructions.Add((instruction, bytes[offset..Math.Min(length, offset + instruction.Length)]));
        }
        return instructions;
    }

    private List<string> Format(IEnumerable<(Instruction Instruction, byte[] Bytes)> instructions)
    {
        var formatter = new GasFormatter(this);
        formatter.Options.GasShowMnemonicSizeSuffix = false;
        formatter.Options.SpaceAfterOperandSeparator = true;
        formatter.Options.RipRelativeAddresses = true;
        formatter.Options.ShowBranchSize = false;
        formatter.Options.UppercaseHex = false;
        var lines = new List<string>();
        var output = new StringOutput();
        foreach (var (instruction, bytes) in instructions)
        {
            formatter.Format(instruction, output);
            // objdump's spelling: Iced writes "callq" for a call through memory.
            var text = output.ToStringAndReset().Replace("callq ", "call ", StringComparison.Ordinal);
            lines.Add($"{Convert.ToHexStringLower(bytes),-24}{text}");
        }
        return lines;
    }

    private ElfSymbol Symbol(string name) =>
        _file.FindSymbols(name).FirstOrDefault(s => s.Value != 0) is { Value: not 0 } symbol
            ? symbol
            : throw new InvalidOperationException($"the calls target has no symbol {name}");

    /// <summary>
    /// Names branch targets and RIP-relative operands after the program's symbols (<c>calls</c>, <c>native_identity</c>);
    /// inside a symbol without a size (the retpoline thunk), after the closest one up to 32 bytes before.
    /// </summary>
    public bool TryGetSymbol(in Instruction instruction, int operand, int instructionOperand, ulong address, int addressSize, out SymbolResult symbol)
    {
        var found = _symbols.FirstOrDefault(s => address == s.Address || (address > s.Address && address < s.Address + s.Size));
        if (found.Name is null)
            found = _symbols.LastOrDefault(s => s.Size == 0 && address >= s.Address && address < s.Address + 32);
        symbol = found.Name is null ? default : new SymbolResult(found.Address, found.Name);
        return found.Name is not null;
    }
}
