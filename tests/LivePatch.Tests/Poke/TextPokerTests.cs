using LivePatch.Poke;

namespace LivePatch.Tests.Poke;

public class TextPokerTests
{
    private static PokeSite Site(ulong address, int length, byte fill) =>
        new(address, [.. Enumerable.Repeat((byte)0x90, length)], [.. Enumerable.Repeat(fill, length)], length, $"site at 0x{address:x}");

    // sites (address+length) given in any order -> the writes: address and length of each contiguous range
    [Theory]
    [InlineData("0x10+5", "0x10+5")]
    [InlineData("0x10+5 0x15+3", "0x10+8")]
    [InlineData("0x20+2 0x15+3 0x10+5", "0x10+8 0x20+2")]
    [InlineData("0x10+5 0x16+1", "0x10+5 0x16+1")]
    [InlineData("0x10+1 0x11+1 0x12+1 0x13+1", "0x10+4")]
    public void Neighbouring_sites_become_one_write_per_contiguous_range(string sites, string writes)
    {
        var parsed = sites.Split(' ').Select((s, i) => Site(Convert.ToUInt64(s.Split('+')[0], 16), int.Parse(s.Split('+')[1], System.Globalization.CultureInfo.InvariantCulture), (byte)(0xa0 + i))).ToList();

        var ranges = TextPoker.MergeContiguous(parsed);

        Assert.Equal(writes, string.Join(' ', ranges.Select(r => $"0x{r.Address:x}+{r.Replacement.Length}")));
        foreach (var site in parsed)
        {
            var range = ranges.Single(r => site.Address >= r.Address && site.Address < r.Address + (ulong)r.Replacement.Length);
            var offset = (int)(site.Address - range.Address);
            Assert.Equal(site.Replacement, range.Replacement[offset..(offset + site.Replacement.Length)]);
            Assert.Equal(site.Expected, range.Expected[offset..(offset + site.Expected.Length)]);
        }
    }

    [Fact]
    public void Sites_a_small_gap_apart_become_one_write_that_rewrites_the_gap_as_it_is()
    {
        var gapReads = new List<(ulong, int)>();
        byte[] ReadNow(ulong address, int length)
        {
            gapReads.Add((address, length));
            return [.. Enumerable.Range(0, length).Select(i => (byte)(0x40 + i))];
        }

        var ranges = TextPoker.MergeContiguous([Site(0x10, 2, 0xa1), Site(0x14, 2, 0xa2), Site(0x100, 1, 0xa3)], maxGap: 4, ReadNow);

        Assert.Equal("0x10+6 0x100+1", string.Join(' ', ranges.Select(r => $"0x{r.Address:x}+{r.Replacement.Length}")));
        Assert.Equal("909042439090", Convert.ToHexStringLower(ranges[0].Expected));
        Assert.Equal("a1a14243a2a2", Convert.ToHexStringLower(ranges[0].Replacement));
        Assert.Equal([(0x10UL, 6)], gapReads); // one read for the whole range, none for a lone site
    }

    [Fact]
    public void Overlapping_sites_are_refused()
    {
        var error = Assert.Throws<ArgumentException>(() => TextPoker.MergeContiguous([Site(0x10, 5, 1), Site(0x14, 2, 2)]));

        Assert.Contains("sites overlap at 0x14", error.Message, StringComparison.Ordinal);
    }
}
