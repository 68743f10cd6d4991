using LivePatch.Live;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>livepatch.h compiles cleanly in every mode a payload is built in, and its records read back as written.</summary>
public class PayloadHeaderTests
{
    [Theory]
    [InlineData("-O0 -std=c99 -fPIC")]
    [InlineData("-O2 -std=c99 -fPIC")]
    [InlineData("-O0 -std=gnu11 -fpie")]
    [InlineData("-O2 -std=gnu11 -fPIC")]
    public void Header_compiles_without_warnings_and_records_read_back(string flags)
    {
        // Build adds -Wall -Wextra -Werror.
        var payload = Payload.Load(Build("replace.c", flags));
        Assert.Equal($"replace{flags.Replace(" ", "", StringComparison.Ordinal)}", payload.Name);
        var byOldName = payload.Functions.ToDictionary(f => f.OldName);
        Assert.Null(byOldName["compute"].OldModule);
        Assert.Equal("compute_fixed", byOldName["compute"].NewSymbol);
        Assert.Equal(LivePatch.Elf.ElfSymbolType.Function, byOldName["compute"].Symbol.Type);
        Assert.Equal("libdemo.so", byOldName["report"].OldModule);
        Assert.Equal("report_fixed", byOldName["report"].NewSymbol);
    }
}
