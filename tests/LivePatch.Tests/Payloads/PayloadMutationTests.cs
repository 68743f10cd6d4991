using LivePatch.Live;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>Corrupted payloads: loading, layout and linking either succeed or throw <see cref="PayloadException"/>, nothing else.</summary>
public class PayloadMutationTests
{
    [Theory]
    [InlineData("-O0 -fPIC", 1)]
    [InlineData("-O2 -fpie", 2)]
    public void Corrupted_bytes_give_a_payload_exception_or_a_link(string flags, int seed)
    {
        var original = File.ReadAllBytes(Build("replace.c", flags));
        var random = new Random(seed);
        for (var round = 0; round < 300; round++)
        {
            var bytes = (byte[])original.Clone();
            for (var flips = random.Next(1, 4); flips > 0; flips--)
                bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            try
            {
                var payload = Payload.Parse(bytes, "mutated.o");
                var layout = PayloadLayout.Compute(payload);
                var alignment = Math.Max(Math.Max(layout.Text.Alignment, layout.ReadOnly.Alignment), layout.Data.Alignment);
                var aligned = (TextAddress + alignment - 1) / alignment * alignment;
                PayloadLinker.Link(payload, layout, aligned, aligned + 0x1000_0000, aligned + 0x2000_0000, _ => Helper);
            }
            catch (PayloadException error)
            {
                Assert.StartsWith("payload mutated.o: ", error.Message, StringComparison.Ordinal);
                Assert.DoesNotContain('\n', error.Message);
            }
        }
    }
}
