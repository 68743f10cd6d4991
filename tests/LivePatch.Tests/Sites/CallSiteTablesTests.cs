using LivePatch.X86;
using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Sites;

/// <summary>Reads the call-site tables of the linked fixture and checks every entry against the source and objdump.</summary>
public class CallSiteTablesTests
{
    [Theory]
    [MemberData(nameof(CallSiteSamples.All), MemberType = typeof(CallSiteSamples))]
    public void Every_site_is_recorded_with_its_slot_type_clobbers_and_name(string sample)
    {
        var file = ElfFile.Load(CallSiteSamples.PathOf(sample));
        var platform = file.Symbols.Single(s => s.Name == "platform");

        var sites = SiteTables.Read(file).CallSites;

        // Every member has one site, from C (LP_CALLn) or the .S file; "missing" has one that never runs.
        Assert.Equal(CallSiteSamples.Members.Select(m => $"platform.{m}").Order(), sites.Select(s => s.Name).Order());
        foreach (var site in sites)
        {
            var type = Array.IndexOf(CallSiteSamples.Members, site.Name["platform.".Length..]);
            Assert.Equal(type, site.Type);
            Assert.Equal(platform.Value + (ulong)(8 * type), site.Slot);
            Assert.Equal(SiteTables.CallSiteLength, site.Length);
            Assert.Equal(site.Name == "platform.twice", site.IsTail);
            Assert.Equal(site.Name is "platform.lean" or "platform.seven" ? GeneralRegisters.Rax : GeneralRegisters.CallerSaved, site.Clobbers);
        }
    }

    [Theory]
    [MemberData(nameof(CallSiteSamples.All), MemberType = typeof(CallSiteSamples))]
    public void Each_site_is_nops_then_an_indirect_call_through_its_slot_in_the_listing(string sample)
    {
        var path = CallSiteSamples.PathOf(sample);
        var listing = SiteSamples.Disassemble(path);

        foreach (var site in SiteTables.Read(ElfFile.Load(path)).CallSites)
        {
            var code = SiteSamples.Covering(listing, site.Address, site.Length);
            Assert.All(code[..^1], i => Assert.True(i.IsNop, i.Text));
            var last = code[^1];
            Assert.Equal([0xff, (byte)(site.IsTail ? 0x25 : 0x15)], last.Bytes.Take(2));
            Assert.Equal(site.IsTail ? "jmp" : "call", last.Mnemonic);
            Assert.Contains($"# {site.Slot:x} <", last.Text, StringComparison.Ordinal); // objdump names the slot by a symbol or relocation there
        }
    }

    [Fact]
    public void The_assembly_op_declares_its_clobbers()
    {
        var file = ElfFile.Load(CallSiteSamples.PathOf("callsites-pie"));
        var seven = file.Symbols.Single(s => s.Name == "seven");
        var add = file.Symbols.Single(s => s.Name == "add");

        var tables = SiteTables.Read(file);

        Assert.Equal(new FunctionClobbers(seven.Value, GeneralRegisters.Rax), Assert.Single(tables.OpClobbers));
        Assert.Equal(GeneralRegisters.Rax, tables.ClobbersOf(seven.Value));
        Assert.Equal(GeneralRegisters.CallerSaved, tables.ClobbersOf(add.Value));
    }

    [Fact]
    public void The_macros_compile_as_strict_c11()
    {
        var path = Fixtures.Gcc.Compile(CallSiteSamples.Source, CallSiteSamples.TargetFlags().Replace("-std=gnu11", "-std=c11 -Wpedantic", StringComparison.Ordinal),
            Path.Combine("sites", "callsites-c11"));

        Assert.Equal(CallSiteSamples.Members.Length, SiteTables.Read(ElfFile.Load(path)).CallSites.Count);
    }
}
