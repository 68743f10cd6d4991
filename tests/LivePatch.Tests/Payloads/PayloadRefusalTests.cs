using System.Buffers.Binary;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Every refusal of the loader and the linker: one <see cref="PayloadException"/> whose single-line
/// message names the payload file and the thing that is wrong. Cases of refusals.c are rows.
/// </summary>
public class PayloadRefusalTests
{
    public static TheoryData<string, string, string[]> Cases => new()
    {
        { "UNKNOWN_SYMBOL", "-O2 -fPIC", ["unknown symbol 'missing_function'", "referenced from .text.fixed+0x"] },
        { "TLS", "-O2 -fPIC", ["unsupported relocation R_X86_64_TLSGD", ".text.fixed+0x", "tls_counter"] },
        { "TLS", "-O2 -fpie", ["unsupported relocation R_X86_64_GOTTPOFF", ".text.fixed+0x"] },
        { "OWN_TLS", "-O2 -fpie", ["unsupported relocation R_X86_64_TPOFF32", ".text.fixed+0x"] },
        { "FAR_DATA", "-O2 -fpie", ["R_X86_64_PC32", ".text.fixed+0x", "'far_table'", "out of reach"] },
        { "NO_RECORDS", "-O2 -fPIC", ["no .livepatch.funcs section"] },
        { "NOT_IN_PAYLOAD", "-O2 -fPIC", ["new function 'helper' is not defined in the payload", ".livepatch.funcs+0x0"] },
        { "NOT_A_FUNCTION", "-O0 -fPIC", ["'not_a_function'", "not a function"] },
        { "DUPLICATE", "-O2 -fPIC", ["'compute' is replaced twice", "fixed", "fixed_again"] },
        { "EMPTY_NAME", "-O2 -fPIC", ["empty old function name", "'libdemo.so!'"] },
        { "NULL_DEPENDS", "-O0 -fPIC", ["field a (the payload depended on) is a null pointer", ".livepatch.funcs+0x"] },
        { "BAD_BUILD_ID", "-O2 -fPIC", ["build-id '12345' of worker is not an even number of hex digits", ".livepatch.funcs+0x"] },
        { "UNKNOWN_KIND", "-O2 -fPIC", ["unknown kind 99", ".livepatch.funcs+0x"] },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Refusal_names_the_payload_and_the_problem(string refusal, string flags, string[] fragments)
    {
        var path = Build("refusals.c", $"-DCASE_{refusal} {flags}");
        var error = Assert.Throws<PayloadException>(() => Link(path, TargetSymbols()));
        AssertOneLineNaming(error, path, fragments);
    }

    [Fact]
    public void Truncated_object_is_malformed()
    {
        var bytes = File.ReadAllBytes(Build("replace.c", "-O2 -fPIC"));
        var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes[..(bytes.Length / 2)], "truncated.o"));
        AssertOneLineNaming(error, "truncated.o", ["malformed ELF", "file offset 0x"]);
        Assert.IsType<LivePatch.Elf.ElfFormatException>(error.InnerException);
    }

    [Fact]
    public void Garbage_is_malformed()
    {
        var bytes = new byte[512];
        new Random(7).NextBytes(bytes);
        var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes, "garbage.o"));
        AssertOneLineNaming(error, "garbage.o", ["malformed ELF"]);
    }

    [Fact]
    public void Record_with_a_wrong_size_field_is_refused()
    {
        var bytes = File.ReadAllBytes(Build("replace.c", "-O2 -fPIC"));
        var section = Payload.Parse(bytes, "replace.o").Elf.FindSection(Payload.RecordSection)!;
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((int)section.Offset + Payload.RecordSize + 4), 16);
        var error = Assert.Throws<PayloadException>(() => Payload.Parse(bytes, "resized.o"));
        AssertOneLineNaming(error, "resized.o", ["record at .livepatch.funcs+0x18 has size 16, expected 24"]);
    }

    [Fact]
    public void Shared_object_is_not_a_payload()
    {
        var path = Gcc.Compile("live/replace.c", $"-shared -fPIC -O2 -I {IncludeDirectory}", "live/replace.so");
        var error = Assert.Throws<PayloadException>(() => Payload.Load(path));
        AssertOneLineNaming(error, path, ["not a relocatable object"]);
    }

    [Fact]
    public void Missing_file_is_refused()
    {
        var path = Path.Combine(Gcc.OutputDirectory, "live", "no-such-payload.o");
        var error = Assert.Throws<PayloadException>(() => Payload.Load(path));
        AssertOneLineNaming(error, path, ["cannot read"]);
    }

    [Fact]
    public void Unknown_target_symbol_is_refused_where_it_is_referenced()
    {
        var symbols = TargetSymbols();
        symbols.Remove("counter");
        var path = Build("replace.c", "-O2 -fPIC");
        var error = Assert.Throws<PayloadException>(() => Link(path, symbols));
        AssertOneLineNaming(error, path, ["unknown symbol 'counter'", "referenced from .text.compute_fixed+0x"]);
    }

    private static void AssertOneLineNaming(PayloadException error, string file, string[] fragments)
    {
        Assert.DoesNotContain('\n', error.Message);
        Assert.StartsWith($"payload {file}: ", error.Message, StringComparison.Ordinal);
        foreach (var fragment in fragments)
            Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
    }
}
