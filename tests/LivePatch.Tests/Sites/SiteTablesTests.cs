using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.X86;

namespace LivePatch.Tests.Sites;

/// <summary>Reads the site tables of the linked fixture and checks every entry against objdump's view of the code.</summary>
public class SiteTablesTests
{
    /// <summary>What the fixture puts at each alternative site, by feature: original and replacement mnemonics (NOPs left out).</summary>
    private static readonly Dictionary<CpuFeature, (string[] Original, string[] Replacement)> Expected = new()
    {
        [CpuFeature.Popcnt] = (["mov"], ["popcnt"]),
        [CpuFeature.Sse2] = ([], ["lfence"]),
        [CpuFeature.Rdtscp] = (["xor", "xor"], ["rdtsc"]),
        [CpuFeature.Avx2] = (["xor"], ["mov"]),
        [CpuFeature.Avx512F] = (["xor"], ["mov", "add"]),
    };

    [Theory]
    [MemberData(nameof(SiteSamples.All), MemberType = typeof(SiteSamples))]
    public void Table_counts_match_the_macro_uses(string sample)
    {
        var tables = SiteTables.Read(ElfFile.Load(SiteSamples.PathOf(sample)));

        Assert.Equal(SiteSamples.CountUses("LP_ALTERNATIVE(") + 2 * SiteSamples.CountUses("LP_ALTERNATIVE_2("), tables.Alternatives.Count);
        Assert.Equal(SiteSamples.CountUses("LP_LOCK_PREFIX"), tables.LockPrefixes.Count);
        Assert.Equal(Expected.Keys.Order(), tables.Alternatives.Select(s => s.Feature).Order());
    }

    [Theory]
    [MemberData(nameof(SiteSamples.All), MemberType = typeof(SiteSamples))]
    public void Alternative_sites_hold_the_original_and_point_at_the_replacement(string sample)
    {
        var path = SiteSamples.PathOf(sample);
        var file = ElfFile.Load(path);
        var listing = SiteSamples.Disassemble(path);
        var replacements = file.FindSection(SiteTables.ReplacementSection)!;

        foreach (var site in SiteTables.Read(file).Alternatives)
        {
            var (original, replacement) = Expected[site.Feature];
            var siteCode = SiteSamples.Covering(listing, site.Address, site.Length);
            Assert.Equal(original, siteCode.Where(i => !i.IsNop).Select(i => i.Mnemonic));
            Assert.True(site.ReplacementLength <= site.Length);

            var replacementCode = SiteSamples.Covering(listing, site.ReplacementAddress, site.ReplacementLength);
            Assert.Equal(replacement, replacementCode.Select(i => i.Mnemonic));
            var fileBytes = file.GetSectionData(replacements).Span
                .Slice((int)(site.ReplacementAddress - replacements.Address), site.ReplacementLength).ToArray();
            Assert.Equal(replacementCode.SelectMany(i => i.Bytes), fileBytes);
        }
    }

    [Fact]
    public void A_longer_replacement_pads_the_site_with_nops()
    {
        var path = SiteSamples.PathOf("sites-pie");
        var site = SiteTables.Read(ElfFile.Load(path)).Alternatives.Single(s => s.Feature == CpuFeature.Sse2);

        Assert.Equal(3, site.ReplacementLength); // lfence
        Assert.Equal(3, site.Length);
        Assert.All(SiteSamples.Covering(SiteSamples.Disassemble(path), site.Address, site.Length),
            i => Assert.True(i.IsNop, i.Text));
    }

    [Theory]
    [MemberData(nameof(SiteSamples.All), MemberType = typeof(SiteSamples))]
    public void A_two_choice_site_has_two_entries_of_one_length_padded_to_the_longer_replacement(string sample)
    {
        var path = SiteSamples.PathOf(sample);
        var tables = SiteTables.Read(ElfFile.Load(path));

        var first = tables.Alternatives.Single(s => s.Feature == CpuFeature.Avx2);
        var second = tables.Alternatives.Single(s => s.Feature == CpuFeature.Avx512F);

        Assert.Equal(first.Address, second.Address);
        Assert.Equal(first.Length, second.Length);
        Assert.Equal(tables.Alternatives.ToList().IndexOf(first) + 1, tables.Alternatives.ToList().IndexOf(second)); // in macro order
        Assert.Equal((5, 8), (first.ReplacementLength, second.ReplacementLength)); // mov $1; mov $1 + add $1
        Assert.Equal(second.ReplacementLength, second.Length); // the original (xor, 2 bytes) padded to the longer one
        var code = SiteSamples.Covering(SiteSamples.Disassemble(path), first.Address, first.Length);
        Assert.Equal(["xor"], code.Where(i => !i.IsNop).Select(i => i.Mnemonic));
    }

    [Theory]
    [MemberData(nameof(SiteSamples.All), MemberType = typeof(SiteSamples))]
    public void Lock_sites_are_lock_prefixes_in_the_listing(string sample)
    {
        var path = SiteSamples.PathOf(sample);
        var listing = SiteSamples.Disassemble(path);

        foreach (var site in SiteTables.Read(ElfFile.Load(path)).LockPrefixes)
        {
            Assert.True(listing.TryGetValue(site.Address, out var instruction), $"no instruction at 0x{site.Address:x}");
            Assert.Equal(0xf0, instruction.Bytes[0]);
            Assert.Equal("lock", instruction.Mnemonic);
        }
    }

    [Fact]
    public void A_module_without_tables_has_no_sites()
    {
        var tables = SiteTables.Read(ElfFile.Load(LivePatch.Tests.Elf.ElfSamples.PathOf("sample-pie")));

        Assert.Empty(tables.Alternatives);
        Assert.Empty(tables.LockPrefixes);
    }
}
