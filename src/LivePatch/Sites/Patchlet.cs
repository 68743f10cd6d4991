using LivePatch.X86;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.X86.Internal;

namespace LivePatch.Sites;

/// <summary>
/// The inline form of a well-known function: instructions that a call site calling that function can hold instead of
/// the call (the kernel's <c>DEF_NATIVE</c> sequences). Patchlet <c>lp_native_X</c> stands for the program's function
/// <c>native_X</c>: arguments in rdi, rsi, rdx, rcx, result in rax, flags free. It is position-independent: no call,
/// return, branch out of itself or RIP-relative operand.
/// </summary>
public sealed class Patchlet
{
    /// <summary>The name of the embedded object assembled from <c>native/patchlets/patchlets.S</c>.</summary>
    internal const string BuiltinResource = "LivePatch.Sites.patchlets.o";

    private const string Prefix = "lp_";
    private const string StartSuffix = "_start";
    private const string EndSuffix = "_end";
    private const string ClobbersSuffix = "_clobbers";

    private static readonly Lazy<IReadOnlyList<Patchlet>> BuiltinPatchlets = new(ReadBuiltin);

    private readonly byte[] _code;

    private Patchlet(string function, byte[] code, GeneralRegisters clobbers)
    {
        Function = function;
        _code = code;
        Clobbers = clobbers;
    }

    /// <summary>The function it is the inline form of, such as <c>native_rdtsc</c>.</summary>
    public string Function { get; }

    /// <summary>Its name in assembly, <c>lp_</c> + <see cref="Function"/>.</summary>
    public string Name => Prefix + Function;

    /// <summary>Its instructions, to be copied as they are to any address.</summary>
    public ReadOnlyMemory<byte> Code => _code;

    /// <summary>The registers it changes (flags are always free).</summary>
    public GeneralRegisters Clobbers { get; }

    /// <summary>
    /// The patchlets that ship with LivePatch, assembled from <c>native/patchlets/patchlets.S</c> when the library
    /// was built: <c>native_rdtsc</c>, <c>native_rdtscp</c>, <c>native_identity</c>, <c>native_zero</c>, <c>native_pause</c>.
    /// </summary>
    public static IReadOnlyList<Patchlet> Builtin => BuiltinPatchlets.Value;

    /// <summary>
    /// Assembles a patchlet for <paramref name="function"/> with Iced's <see cref="Assembler"/>:
    /// <c>Patchlet.Assemble("native_rdtsc", a => { a.rdtsc(); a.shl(rdx, 32); a.or(rax, rdx); }, GeneralRegisters.Rax | GeneralRegisters.Rdx)</c>.
    /// </summary>
    /// <exception cref="PatchletException">The code is empty, cannot be assembled, or is not position-independent.</exception>
    public static Patchlet Assemble(string function, Action<Assembler> build, GeneralRegisters clobbers)
    {
        ArgumentException.ThrowIfNullOrEmpty(function);
        ArgumentNullException.ThrowIfNull(build);
        var assembler = new Assembler(64);
        build(assembler);
        var writer = new ByteListCodeWriter();
        if (!assembler.TryAssemble(writer, 0, out var error, out _))
            throw new PatchletException(Prefix + function, $"cannot be assembled: {error}");
        return Create(function, [.. writer.Bytes], clobbers);
    }

    /// <summary>
    /// Reads the patchlets of an object assembled by GNU as from a file written like <c>native/patchlets/patchlets.S</c>:
    /// global labels <c>lp_X_start</c> and <c>lp_X_end</c> around each, and an absolute symbol <c>lp_X_clobbers</c>.
    /// </summary>
    /// <exception cref="PatchletException">A patchlet lacks a label or its clobbers, carries relocations, or is not position-independent.</exception>
    public static IReadOnlyList<Patchlet> Read(ElfFile assembled)
    {
        ArgumentNullException.ThrowIfNull(assembled);
        if (assembled.Type != ElfType.Relocatable)
            throw new PatchletException(null, $"the patchlets must be an object assembled by as (ET_REL), not {assembled.Type}");
        var symbols = assembled.Symbols.Where(s => s.Binding == ElfSymbolBinding.Global && s.SectionIndex != ElfSymbol.UndefinedSection)
            .GroupBy(s => s.Name).ToDictionary(g => g.Key, g => g.First());
        var patchlets = new List<Patchlet>();
        foreach (var start in symbols.Values.Where(s => s.Name.StartsWith(Prefix, StringComparison.Ordinal) && s.Name.EndsWith(StartSuffix, StringComparison.Ordinal)).OrderBy(s => s.Name, StringComparer.Ordinal))
        {
            var name = start.Name[..^StartSuffix.Length];
            var function = name[Prefix.Length..];
            if (!symbols.TryGetValue(name + EndSuffix, out var end) || end.SectionIndex != start.SectionIndex || end.Value < start.Value)
                throw new PatchletException(name, $"has no {name}{EndSuffix} label after {start.Name} in the same section");
            if (!symbols.TryGetValue(name + ClobbersSuffix, out var clobbers) || clobbers.SectionIndex != ElfSymbol.AbsoluteSection)
                throw new PatchletException(name, $"has no absolute symbol {name}{ClobbersSuffix} (.set {name}{ClobbersSuffix}, MASK)");
            if (clobbers.Value > ushort.MaxValue)
                throw new PatchletException(name, $"clobber mask 0x{clobbers.Value:x} has bits beyond r15");
            var section = assembled.Sections[(int)start.SectionIndex];
            foreach (var relocations in assembled.RelocationSections.Where(r => r.TargetSection?.Index == section.Index))
                foreach (var relocation in relocations.Relocations.Where(r => r.Offset >= start.Value && r.Offset < end.Value))
                    throw new PatchletException(name, $"carries a relocation ({relocation.TypeName} against {relocation.SymbolName} at +0x{relocation.Offset - start.Value:x}): a patchlet must not refer to anything outside itself (branch to local labels only)");
            var code = assembled.GetSectionData(section).Span[(int)start.Value..(int)end.Value].ToArray();
            patchlets.Add(Create(function, code, (GeneralRegisters)clobbers.Value));
        }
        return patchlets;
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name} ({_code.Length} bytes, clobbers {Registers(Clobbers)})";

    /// <summary>The registers as GNU assembly names them, <c>rax, rdx</c>, or <c>none</c>.</summary>
    internal static string Registers(GeneralRegisters registers) => registers == GeneralRegisters.None
        ? "none"
        : string.Join(", ", Enum.GetValues<GeneralRegisters>().Where(r => r is not (GeneralRegisters.None or GeneralRegisters.CallerSaved) && registers.HasFlag(r))
            .Select(r => r.ToString().ToLowerInvariant()));

    private static Patchlet Create(string function, byte[] code, GeneralRegisters clobbers)
    {
        var name = Prefix + function;
        if (code.Length == 0)
            throw new PatchletException(name, "is empty");
        if (code.Length > X86.PatchBuffer.MaxPatchLength)
            throw new PatchletException(name, $"is {code.Length} bytes long, more than the {X86.PatchBuffer.MaxPatchLength}-byte patch limit");
        if (clobbers.HasFlag(GeneralRegisters.Rsp))
            throw new PatchletException(name, "declares rsp clobbered");
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code), 0);
        while (decoder.IP < (ulong)code.Length)
        {
            decoder.Decode(out var instruction);
            if (instruction.IsInvalid)
                throw new PatchletException(name, $"has bytes that are not a whole instruction at +0x{instruction.IP:x}");
            var refused = instruction.FlowControl switch
            {
                FlowControl.Call or FlowControl.IndirectCall => "calls",
                FlowControl.Return => "returns",
                FlowControl.IndirectBranch => "branches indirectly",
                FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch when instruction.NearBranchTarget > (ulong)code.Length => "branches out of itself",
                _ => instruction.IsIPRelativeMemoryOperand ? "addresses memory relative to rip" : null,
            };
            if (refused is not null)
                throw new PatchletException(name, $"{refused} ({InstructionText.Format(instruction)}); a patchlet must run the same at any address and never leave a return address in a site");
        }
        return new Patchlet(function, code, clobbers);
    }

    private static IReadOnlyList<Patchlet> ReadBuiltin()
    {
        using var stream = typeof(Patchlet).Assembly.GetManifestResourceStream(BuiltinResource)
            ?? throw new InvalidOperationException($"the library was built without its patchlets ({BuiltinResource}): build it with GNU as on the PATH");
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        return Read(ElfFile.Parse(memory.ToArray()));
    }
}

/// <summary>A patchlet, or the object holding patchlets, is malformed; the message names the patchlet and why.</summary>
public sealed class PatchletException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for the patchlet <paramref name="patchlet"/> (<c>lp_native_rdtsc</c>), or for the whole object when null.</summary>
    public PatchletException(string? patchlet, string reason)
        : base(patchlet is null ? $"patchlets: {reason}" : $"patchlet {patchlet} {reason}")
    {
        Patchlet = patchlet;
    }

    /// <summary>The patchlet's name, or null when the object as a whole is wrong.</summary>
    public string? Patchlet { get; }
}
