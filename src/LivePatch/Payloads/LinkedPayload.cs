using LivePatch.Elf;

namespace LivePatch.Payloads;

/// <summary>One region of a linked payload: its final address in the target and its final bytes.</summary>
internal readonly record struct LinkedRegion(ulong Address, byte[] Bytes)
{
    /// <summary>True when <paramref name="address"/> lies inside the region.</summary>
    public bool Contains(ulong address) => address >= Address && address - Address < (ulong)Bytes.Length;
}

/// <summary>A new function of a linked payload and the address it will run at.</summary>
internal readonly record struct LinkedFunction(PayloadFunction Function, ulong Address);

/// <summary>A payload linked for given region addresses: the bytes to write into the target, ready to run.</summary>
internal sealed class LinkedPayload
{
    private readonly Func<ElfSymbol, ulong> _addressOfDefined;

    internal LinkedPayload(
        Payload payload, LinkedRegion text, LinkedRegion readOnly, LinkedRegion data,
        LinkedFunction[] functions, Func<ElfSymbol, ulong> addressOfDefined)
    {
        Payload = payload;
        Text = text;
        ReadOnly = readOnly;
        Data = data;
        Functions = functions;
        _addressOfDefined = addressOfDefined;
    }

    /// <summary>The payload linked.</summary>
    public Payload Payload { get; }

    /// <summary>The executable region: code and stubs.</summary>
    public LinkedRegion Text { get; }

    /// <summary>The region to map read-only: constants, strings, GOT slots.</summary>
    public LinkedRegion ReadOnly { get; }

    /// <summary>The writable region: data, <c>.bss</c>, common symbols.</summary>
    public LinkedRegion Data { get; }

    /// <summary>Each of <see cref="Payload.Functions"/>, in the same order, with its new function's final address.</summary>
    public IReadOnlyList<LinkedFunction> Functions { get; }

    /// <summary>The final address of a symbol defined in the payload (a section symbol gives its section's address).</summary>
    /// <exception cref="ArgumentException">The symbol is undefined or lies in a section that is not loaded.</exception>
    public ulong AddressOf(ElfSymbol symbol) => _addressOfDefined(symbol);
}
