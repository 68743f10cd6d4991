using System.Text.Json.Serialization;

namespace LivePatch.Live;

/// <summary>Where a payload stands in a target.</summary>
public enum PayloadState
{
    /// <summary>Uploaded and linked in the target, checked, nothing redirected yet (<c>livepatch load</c>).</summary>
    Loaded,
    /// <summary>Its functions are redirected to the new code.</summary>
    Applied,
    /// <summary>Its functions run their original code again; its memory stays mapped (a thread may still be inside it).</summary>
    Reverted,
}

/// <summary>A payload as recorded in the target itself: what any later livepatch run sees in <c>list</c>.</summary>
/// <param name="Name">The payload's name (its file name without extension).</param>
/// <param name="File">The object file it was loaded from.</param>
/// <param name="State">Loaded, applied or reverted.</param>
/// <param name="AppliedAt">When it was last applied, or null while only loaded.</param>
/// <param name="RevertedAt">When it was reverted, or null.</param>
/// <param name="PauseMicroseconds">How long the target's threads were held to apply it (0 while loaded).</param>
/// <param name="Threads">How many threads were held (0 while loaded).</param>
/// <param name="Functions">The functions it replaced.</param>
/// <param name="Memory">The memory mapped in the target for its code and data.</param>
public sealed record AppliedPayloadInfo(
    string Name, string File, PayloadState State, DateTimeOffset? AppliedAt, DateTimeOffset? RevertedAt,
    double PauseMicroseconds, int Threads, IReadOnlyList<AppliedFunctionInfo> Functions, IReadOnlyList<MappedBlock> Memory)
{
    /// <summary>When it was loaded (uploaded and linked).</summary>
    public DateTimeOffset? LoadedAt { get; init; }

    /// <summary>The payloads that must be applied before it (<c>LIVEPATCH_DEPENDS</c>).</summary>
    public IReadOnlyList<string> Depends { get; init; } = [];

    /// <summary>The build-ids it was built against and what the process has (<c>LIVEPATCH_TARGET_BUILD_ID</c>).</summary>
    public IReadOnlyList<BuildIdCheck> BuildIds { get; init; } = [];

    /// <summary>Where its writable data lives, how long it is and its SHA-256 as loaded: a reverted payload whose data
    /// changed (it ran) is not applied again without a fresh load.</summary>
    public ulong DataAddress { get; init; }

    /// <summary>Length of the writable data at <see cref="DataAddress"/>.</summary>
    public int DataLength { get; init; }

    /// <summary>SHA-256 of the writable data as loaded (null when it has none).</summary>
    [JsonConverter(typeof(HexBytesConverter))]
    public byte[]? DataHash { get; init; }

    /// <summary>Its hooks (<c>LIVEPATCH_PRE_APPLY</c>...) where they were linked, run at each apply and revert.</summary>
    public IReadOnlyList<AppliedHookInfo> Hooks { get; init; } = [];
}

/// <summary>A build-id a payload requires and what the process holds.</summary>
/// <param name="Module">The module's file name.</param>
/// <param name="Expected">The build-id the payload was built against.</param>
/// <param name="Actual">The running module's build-id (<c>none</c> when it has no note).</param>
/// <param name="Forced">True when they differ and the user forced the action (<c>--force</c>).</param>
public sealed record BuildIdCheck(string Module, string Expected, string Actual, bool Forced);

/// <summary>One function a payload replaced: where the jump was written and the bytes it replaced.</summary>
/// <param name="Name">The old function, <c>module!name</c>.</param>
/// <param name="OldAddress">The old function's entry.</param>
/// <param name="PatchAddress">Where the 5-byte jump lives (after <c>endbr64</c> when the function starts with it).</param>
/// <param name="NewSymbol">The payload's function that replaces it.</param>
/// <param name="NewAddress">The new function's address in the target.</param>
/// <param name="OriginalBytes">The bytes the jump replaced.</param>
/// <param name="PatchBytes">The jump.</param>
public sealed record AppliedFunctionInfo(string Name, ulong OldAddress, ulong PatchAddress, string NewSymbol, ulong NewAddress,
    [property: JsonConverter(typeof(HexBytesConverter))] byte[] OriginalBytes,
    [property: JsonConverter(typeof(HexBytesConverter))] byte[] PatchBytes)
{
    /// <summary>The whole instructions the jump overlaps (what a thread stopped among them is moved out of); null in records of old versions.</summary>
    [JsonConverter(typeof(HexBytesConverter))]
    public byte[]? DisplacedBytes { get; init; }

    /// <summary>The bytes no stopped thread may be strictly inside while the jump is written or taken out: the displaced instructions, at least the jump.</summary>
    [JsonIgnore]
    public int Guard => Math.Max(PatchBytes.Length, DisplacedBytes?.Length ?? 0);

    /// <summary>The trampoline holding the displaced instructions relocated, then a jump back; 0 when they cannot be moved.</summary>
    public ulong Trampoline { get; init; }

    /// <summary>
    /// The callee-save thunk the jump goes to, which keeps <see cref="Keeps"/> around a call of the new function; 0
    /// when the jump goes straight to the new function (it writes no register the old one left alone).
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public ulong Thunk { get; init; }

    /// <summary>The registers the thunk keeps for the callers (<c>rcx, r8</c>): those the new code may write and the old never did; null without a thunk.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Keeps { get; init; }

    /// <summary>
    /// When the payload replaced a GNU indirect function: that IFUNC, <c>module!name</c>. <see cref="Name"/> then reads
    /// <c>module!name (ifunc: implementation)</c> and <see cref="OldAddress"/> is the implementation the process uses,
    /// whose entry holds the jump. Null, and absent from the record, otherwise.
    /// </summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Ifunc { get; init; }
}

/// <summary>A block of memory LivePatch mapped in a target.</summary>
/// <param name="Address">Its first address.</param>
/// <param name="Size">Its size in bytes.</param>
/// <param name="Use">What it holds: <c>text</c>, <c>rodata</c> or <c>data</c>.</param>
public sealed record MappedBlock(ulong Address, ulong Size, string Use);

/// <summary>What applying a payload did.</summary>
/// <param name="Payload">The payload's name.</param>
/// <param name="Functions">The functions redirected.</param>
/// <param name="ThreadsStopped">Threads held in the stop that made the change.</param>
/// <param name="Pause">How long they were held, from the first interrupted to the last resumed.</param>
/// <param name="Attempts">Stops made, including retries while a thread was inside a site.</param>
public sealed record ApplyReport(string Payload, IReadOnlyList<AppliedFunctionInfo> Functions, int ThreadsStopped, TimeSpan Pause, int Attempts)
{
    /// <summary>The copies of the replaced functions found (clones, aliases, inlined copies), replaced or allowed.</summary>
    public IReadOnlyList<FunctionCopy> Copies { get; init; } = [];
}

/// <summary>What reverting a payload did.</summary>
/// <param name="Payload">The payload's name.</param>
/// <param name="Functions">The functions restored.</param>
/// <param name="ThreadsStopped">Threads held in the stop that made the change.</param>
/// <param name="Pause">How long they were held.</param>
/// <param name="Attempts">Stops made, including retries.</param>
public sealed record RevertReport(string Payload, IReadOnlyList<AppliedFunctionInfo> Functions, int ThreadsStopped, TimeSpan Pause, int Attempts);
