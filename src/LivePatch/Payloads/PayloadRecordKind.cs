namespace LivePatch.Payloads;

/// <summary>The <c>kind</c> field of a <c>.livepatch.funcs</c> record (<c>LIVEPATCH_KIND_*</c> in livepatch.h).</summary>
internal enum PayloadRecordKind : uint
{
    Replace = 1,
    Original = 2,
    Depends = 3,
    TargetBuildId = 4,
    PreApply = 5,
    PostApply = 6,
    PreRevert = 7,
    PostRevert = 8,
}
