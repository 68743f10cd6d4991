using LivePatch.Payloads;

namespace LivePatch.Live;

/// <summary>What loading a payload did: it is linked in the target, checked, nothing redirected.</summary>
/// <param name="Payload">The payload's name.</param>
/// <param name="Functions">The functions it will redirect, with the bytes it expects at each.</param>
/// <param name="Memory">The memory mapped for it.</param>
/// <param name="BuildIds">The build-ids it asked for and what the process has.</param>
public sealed record LoadReport(string Payload, IReadOnlyList<AppliedFunctionInfo> Functions, IReadOnlyList<MappedBlock> Memory, IReadOnlyList<BuildIdCheck> BuildIds)
{
    /// <summary>The copies of the replaced functions found (clones, aliases, inlined copies), replaced or allowed.</summary>
    public IReadOnlyList<FunctionCopy> Copies { get; init; } = [];
}

/// <summary>What replacing every applied payload by a new one did, in one stop.</summary>
/// <param name="Payload">The new payload's name.</param>
/// <param name="Reverted">The payloads reverted, oldest first.</param>
/// <param name="Functions">The new payload's functions.</param>
/// <param name="ThreadsStopped">Threads held in the stop.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
public sealed record ReplaceReport(string Payload, IReadOnlyList<string> Reverted, IReadOnlyList<AppliedFunctionInfo> Functions, int ThreadsStopped, TimeSpan Pause, int Attempts)
{
    /// <summary>The copies of the new payload's functions found (clones, aliases, inlined copies), replaced or allowed.</summary>
    public IReadOnlyList<FunctionCopy> Copies { get; init; } = [];
}

/// <summary>What unloading a payload freed.</summary>
/// <param name="Payload">Its name.</param>
/// <param name="Memory">The blocks unmapped.</param>
/// <param name="ThreadsStopped">Threads held while no thread was found in its code.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made.</param>
public sealed record UnloadReport(string Payload, IReadOnlyList<MappedBlock> Memory, int ThreadsStopped, TimeSpan Pause, int Attempts);

/// <summary>One check made by <see cref="LivePatcher.Check(Payload)"/>.</summary>
/// <param name="Name">What was checked (<c>build-id of app</c>).</param>
/// <param name="Detail">What was found.</param>
public sealed record CheckResult(string Name, string Detail);
