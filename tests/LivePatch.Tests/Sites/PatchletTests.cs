using LivePatch.X86;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.Tests.Fixtures;
using static Iced.Intel.AssemblerRegisters;

namespace LivePatch.Tests.Sites;

/// <summary>The patchlets of native/patchlets/patchlets.S, as GNU as assembled them into the library, against Iced.</summary>
public class PatchletTests
{
    private const GeneralRegisters Rax = GeneralRegisters.Rax;
    private const GeneralRegisters Rcx = GeneralRegisters.Rcx;
    private const GeneralRegisters Rdx = GeneralRegisters.Rdx;

    /// <summary>Each built-in patchlet: its instructions as Iced formats them (GNU syntax), its clobbers, and the same code built with Iced's Assembler.</summary>
    private static readonly Dictionary<string, (string[] Text, GeneralRegisters Clobbers, Action<Assembler> Build)> Expected = new()
    {
        ["native_rdtsc"] = (["rdtsc", "shl $0x20,%rdx", "or %rdx,%rax"], Rax | Rdx, a => { a.rdtsc(); a.shl(rdx, 32); a.or(rax, rdx); }),
        ["native_rdtscp"] = (["rdtscp", "shl $0x20,%rdx", "or %rdx,%rax"], Rax | Rcx | Rdx, a => { a.rdtscp(); a.shl(rdx, 32); a.or(rax, rdx); }),
        ["native_identity"] = (["mov %rdi,%rax"], Rax, a => a.mov(rax, rdi)),
        ["native_zero"] = (["xor %eax,%eax"], Rax, a => a.xor(eax, eax)),
        ["native_pause"] = (["pause"], GeneralRegisters.None, a => a.pause()),
    };

    public static TheoryData<string> Names => [.. Expected.Keys];

    [Fact]
    public void The_library_holds_every_patchlet_of_the_assembly_file()
    {
        Assert.Equal(Expected.Keys.Order(), Patchlet.Builtin.Select(p => p.Function).Order());
        Assert.All(Patchlet.Builtin, p => Assert.Equal("lp_" + p.Function, p.Name));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void A_builtin_patchlet_decodes_as_written_and_equals_the_one_built_with_iced(string function)
    {
        var (text, clobbers, build) = Expected[function];
        var builtin = Patchlet.Builtin.Single(p => p.Function == function);

        var assembled = Patchlet.Assemble(function, build, clobbers);

        Assert.Equal(text, Decode(builtin.Code.ToArray()));
        Assert.Equal(clobbers, builtin.Clobbers);
        Assert.Equal(builtin.Code.ToArray(), assembled.Code.ToArray());
    }

    [Fact]
    public void The_embedded_object_is_the_assembly_file_as_it_is_now()
    {
        var fresh = Patchlet.Read(ElfFile.Load(Assemble(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "patchlets", "patchlets.S")), "fresh")));

        Assert.Equal(Patchlet.Builtin.Select(p => (p.Function, Convert.ToHexString(p.Code.Span), p.Clobbers)),
            fresh.Select(p => (p.Function, Convert.ToHexString(p.Code.Span), p.Clobbers)));
    }

    /// <summary>A patchlet object that breaks a rule, and what the refusal says.</summary>
    [Theory]
    [InlineData("relocation", "lea outside(%rip), %rax", "carries a relocation (R_X86_64_PC32 against outside")]
    [InlineData("call", "call 1f\n1:", "calls ('call 5' at 0x0)")]
    [InlineData("return", "ret", "returns ('ret' at 0x0)")]
    [InlineData("rip", "mov 2f(%rip), %rax", "addresses memory relative to rip")]
    [InlineData("branch", "jmp 2f", "branches out of itself")]
    public void A_patchlet_that_is_not_position_independent_is_refused(string name, string code, string message)
    {
        var source = $"""
            .text
            .globl lp_bad_start, lp_bad_end, lp_bad_clobbers
            .set lp_bad_clobbers, 1
            lp_bad_start:
            {code}
            lp_bad_end:
            nop
            2: .quad 0
            """;

        var error = Assert.Throws<PatchletException>(() => Patchlet.Read(ElfFile.Load(Assemble(source, name))));

        Assert.Equal("lp_bad", error.Patchlet);
        Assert.StartsWith("patchlet lp_bad ", error.Message, StringComparison.Ordinal);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("no-end", ".globl lp_bad_start, lp_bad_clobbers\n.set lp_bad_clobbers, 1\nlp_bad_start: nop", "has no lp_bad_end label")]
    [InlineData("no-clobbers", ".globl lp_bad_start, lp_bad_end\nlp_bad_start: nop\nlp_bad_end:", "has no absolute symbol lp_bad_clobbers")]
    [InlineData("rsp", ".globl lp_bad_start, lp_bad_end, lp_bad_clobbers\n.set lp_bad_clobbers, 0x10\nlp_bad_start: nop\nlp_bad_end:", "declares rsp clobbered")]
    [InlineData("empty", ".globl lp_bad_start, lp_bad_end, lp_bad_clobbers\n.set lp_bad_clobbers, 1\nlp_bad_start:\nlp_bad_end:", "is empty")]
    public void A_patchlet_missing_a_label_or_its_clobbers_is_refused(string name, string source, string message)
    {
        var error = Assert.Throws<PatchletException>(() => Patchlet.Read(ElfFile.Load(Assemble(".text\n" + source + "\n", name))));

        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_patchlet_built_with_iced_keeps_the_same_rules()
    {
        var error = Assert.Throws<PatchletException>(() => Patchlet.Assemble("native_bad", a => { a.mov(rax, rdi); a.ret(); }, Rax));

        Assert.Equal("patchlet lp_native_bad returns ('ret' at 0x3); a patchlet must run the same at any address and never leave a return address in a site", error.Message);
    }

    private static string Assemble(string source, string name)
    {
        var directory = ExternalTool.ScratchDirectory($"patchlet-{name}");
        var input = Path.Combine(directory, "patchlets.s");
        var output = Path.Combine(directory, "patchlets.o");
        File.WriteAllText(input, source);
        ExternalTool.Run("as", "--64", "-o", output, input);
        return output;
    }

    private static List<string> Decode(byte[] code)
    {
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), 0);
        var formatter = new GasFormatter();
        var output = new StringOutput();
        var text = new List<string>();
        while (decoder.IP < (ulong)code.Length)
        {
            decoder.Decode(out var instruction);
            formatter.Format(instruction, output);
            text.Add(output.ToStringAndReset());
        }
        return text;
    }
}
