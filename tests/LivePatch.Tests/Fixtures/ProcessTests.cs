namespace LivePatch.Tests.Fixtures;

/// <summary>
/// Tests that run busy target processes share one collection, so they run one at a time: on a 2-CPU machine,
/// several sets of busy threads at once would make every stop wait for the scheduler.
/// </summary>
[CollectionDefinition(Name)]
public sealed class ProcessTests
{
    public const string Name = "processes";
}
