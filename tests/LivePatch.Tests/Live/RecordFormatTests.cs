using System.Text;
using System.Text.Json;
using LivePatch.Live;
using LivePatch.Tests.X86;

namespace LivePatch.Tests.Live;

/// <summary>
/// The record's JSON (docs/record.md) is the contract between livepatch versions: a process patched by one build is
/// listed, reverted and recovered by the next. The files under Data/ were read out of processes patched by the build of
/// commit c28a43d, before the record model held bytes instead of hex strings; they must read and write back unchanged.
/// </summary>
public class RecordFormatTests
{
    private static byte[] Sample(string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Live", "Data", name));

    [Theory]
    [InlineData("record-v2-c28a43d.json")]
    [InlineData("record-v2-hooks-c28a43d.json")]
    public void A_record_an_earlier_build_wrote_reads_and_writes_back_byte_for_byte(string sample)
    {
        var json = Sample(sample);

        var record = RecordStore.Deserialize(json);

        Assert.Equal(Encoding.UTF8.GetString(json), Encoding.UTF8.GetString(RecordStore.Serialize(record)));
    }

    [Fact]
    public void Bytes_in_the_record_are_bytes_in_the_model()
    {
        var record = RecordStore.Deserialize(Sample("record-v2-c28a43d.json"));

        var function = Assert.Single(record.Payloads[0].Functions);
        Assert.Equal("4883ec08be", Decoded.ToHex(function.OriginalBytes));
        Assert.Equal("e96bcdffff", Decoded.ToHex(function.PatchBytes));
        Assert.Equal("4883ec08be04000000", Decoded.ToHex(function.DisplacedBytes));
        Assert.Equal(9, function.Guard);
        var site = Assert.Single(record.Intent!.Sites);
        Assert.Equal(("e96bcdffff", "e96b4d0000"), (Decoded.ToHex(site.OldBytes), Decoded.ToHex(site.NewBytes)));
        Assert.Equal(SiteState.New, site.Classify(site.NewBytes));
        Assert.Null(record.Payloads[0].DataHash);

        var hooks = RecordStore.Deserialize(Sample("record-v2-hooks-c28a43d.json")).Payloads[0];
        Assert.Equal(32, hooks.DataHash!.Length);
        Assert.Equal("df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119", Decoded.ToHex(hooks.DataHash));
    }

    [Theory]
    [InlineData("4883ec08b", "not a hex string")]
    [InlineData("zz83ec08be", "not a hex string")]
    public void Bytes_that_are_not_hex_are_refused_as_malformed_json(string originalBytes, string why)
    {
        var json = Encoding.UTF8.GetString(Sample("record-v2-c28a43d.json")).Replace("\"originalBytes\":\"4883ec08be\"", $"\"originalBytes\":\"{originalBytes}\"", StringComparison.Ordinal);

        var error = Assert.Throws<JsonException>(() => RecordStore.Deserialize(Encoding.UTF8.GetBytes(json)));

        Assert.Contains(why, error.Message, StringComparison.Ordinal);
    }
}
