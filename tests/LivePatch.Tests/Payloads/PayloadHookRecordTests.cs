using LivePatch.Live;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// ORIGINAL and hook records (<c>LIVEPATCH_ORIGINAL</c>, <c>LIVEPATCH_PRE_APPLY</c>...) read back as written, and every
/// refusal of them is one line naming the payload and the record. Cases of hooks/records.c are rows.
/// </summary>
public class PayloadHookRecordTests
{
    [Theory]
    [InlineData("-O0 -std=c99 -fPIC")]
    [InlineData("-O2 -std=gnu11 -fPIC")]
    [InlineData("-O2 -fpie")]
    [InlineData("-O2 -fno-pic")]
    public void Originals_and_hooks_read_back(string flags)
    {
        var payload = Payload.Load(Build("hooks/records.c", $"-DCASE_EVERY_KIND {flags}"));

        var originals = payload.Originals.ToDictionary(o => o.Symbol);
        Assert.Equal(2, originals.Count);
        Assert.Equal("compute", originals["original_compute"].OldName);
        Assert.Same(payload.Functions.Single(f => f.OldName == "compute"), originals["original_compute"].Function);
        // A bare name in LIVEPATCH_ORIGINAL matches the module-qualified REPLACE of the same function.
        Assert.Same(payload.Functions.Single(f => f.OldModule == "worker"), originals["original_secret"].Function);
        Assert.Equal(
            [(PayloadHookKind.PreApply, "hook"), (PayloadHookKind.PostApply, "post"), (PayloadHookKind.PreRevert, "hook"), (PayloadHookKind.PostRevert, "post")],
            payload.Hooks.OrderBy(h => h.Kind).Select(h => (h.Kind, h.Name)));
        Assert.True(payload.HookOf(PayloadHookKind.PreRevert)!.CanVeto);
        Assert.False(payload.HookOf(PayloadHookKind.PostApply)!.CanVeto);
    }

    public static TheoryData<string, string[]> Refusals => new()
    {
        { "ORIGINAL_NOT_REPLACED", ["'original_helper' is declared the original of 'helper', which the payload does not replace", "LIVEPATCH_REPLACE(\"helper\""] },
        { "ORIGINAL_DEFINED", ["the original of 'compute' must be a symbol the payload declares and does not define", "is defined in the payload"] },
        { "ORIGINAL_TWICE", ["'original_compute' is declared an original twice"] },
        { "ORIGINAL_AMBIGUOUS", ["'original_compute' is declared the original of 'compute', which names several replaced functions", "'liba.so!compute'", "'libb.so!compute'"] },
        { "HOOK_TWICE", ["two PRE_APPLY hooks", "'hook'", "'other_hook'", "at most one of each kind"] },
        { "HOOK_UNDEFINED", ["the pre-revert hook 'elsewhere' is not defined in the payload"] },
        { "HOOK_NOT_A_FUNCTION", ["the post-apply hook", "is not a function symbol of the payload"] },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void Refusal_names_the_payload_and_the_problem(string refusal, string[] fragments)
    {
        var path = Build("hooks/records.c", $"-DCASE_{refusal} -O2 -fPIC");

        var error = Assert.Throws<PayloadException>(() => Payload.Load(path));

        Assert.DoesNotContain('\n', error.Message);
        Assert.StartsWith($"payload {path}: ", error.Message, StringComparison.Ordinal);
        foreach (var fragment in fragments)
            Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_hook_of_the_wrong_type_does_not_compile()
    {
        var error = Assert.Throws<InvalidOperationException>(() => Build("hooks/records.c", "-DCASE_HOOK_WRONG_TYPE -O2 -fPIC"));
        Assert.Contains("livepatch_hook_must_be_int_hook_void", error.Message, StringComparison.Ordinal);
    }
}
