using LivePatch.Targets;

namespace LivePatch.Tests.Targets;

/// <summary>The CET features a thread's status lists, as Linux 6.6+ writes them (each word followed by a space).</summary>
public class ControlFlowEnforcementTests
{
    [Theory]
    [InlineData(null, CetFeatures.None)]
    [InlineData("", CetFeatures.None)]
    [InlineData("shstk ", CetFeatures.ShadowStack)]
    [InlineData("shstk wrss ", CetFeatures.ShadowStack | CetFeatures.ShadowStackWrites)]
    [InlineData("\tibt shstk", CetFeatures.ShadowStack | CetFeatures.IndirectBranchTracking)]
    [InlineData("future shstk", CetFeatures.ShadowStack)]
    internal void Status_words_name_the_features(string? text, CetFeatures expected)
    {
        Assert.Equal(expected, ControlFlowEnforcement.Parse(text));
        if (expected != CetFeatures.None)
            Assert.Equal(expected, ControlFlowEnforcement.Parse(ControlFlowEnforcement.Describe(expected)));
    }
}
