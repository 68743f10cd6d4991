using LivePatch.X86;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Sites;

namespace LivePatch.Tests.Sites;

public partial class ClobberNumbersTests
{
    // sites.h repeats the GeneralRegisters bits and the call-site length for C: each must match the library.
    [Fact]
    public void The_header_numbers_every_register_as_the_library_does()
    {
        var header = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "include", "livepatch", "sites.h"));
        var defined = Define().Matches(header).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture));

        foreach (var register in Enum.GetValues<GeneralRegisters>().Where(r => r is not (GeneralRegisters.None or GeneralRegisters.Rsp or GeneralRegisters.CallerSaved)))
            Assert.Equal((int)register, defined[$"CLOBBER_{register.ToString().ToUpperInvariant()}"]);
        Assert.DoesNotContain("CLOBBER_RSP", defined.Keys);
        Assert.Equal((int)GeneralRegisters.CallerSaved, defined["CLOBBERS_CALLER_SAVED"]);
        Assert.Equal(0, defined["CLOBBERS_NONE"]);
        Assert.Matches($@"#define LP_CALLSITE_LENGTH\s+{SiteTables.CallSiteLength}\b", header);
    }

    [GeneratedRegex(@"#define LP_(CLOBBERS?_\w+)\s+0x([0-9a-fA-F]+)")]
    private static partial Regex Define();
}
