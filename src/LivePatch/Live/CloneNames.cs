using System.Text.RegularExpressions;

namespace LivePatch.Live;

/// <summary>What gcc's suffix on a function symbol says it is.</summary>
internal enum CloneNameKind
{
    /// <summary>No suffix of gcc's: a function of the source.</summary>
    Source,
    /// <summary><c>.isra.N</c>, <c>.constprop.N</c>, <c>.part.N</c>: a copy that callers may call instead of the function.</summary>
    Clone,
    /// <summary>Ends in <c>.cold</c> (<c>.cold.N</c> before gcc 10): the unlikely part of a function, run only from it.</summary>
    SplitPart,
    /// <summary>
    /// <c>.localalias</c>, or glibc's <c>__GI_</c> prefix (its <c>hidden_def</c>): a second name of the same function for
    /// calls inside its library.
    /// </summary>
    LocalAlias,
}

/// <summary>
/// Reads gcc's clone suffixes off symbol names: <c>scale.constprop.0.isra.0</c> is a clone of <c>scale</c>,
/// <c>lookup.cold</c> the split part of <c>lookup</c>. <c>.lto_priv.N</c> is no copy (a static renamed by LTO), so it
/// stays part of the name. glibc's <c>__GI_name</c> is <c>name</c> under a second name.
/// </summary>
internal static partial class CloneNames
{
    /// <summary>The function a symbol is a copy of (its name without gcc's suffixes), and what the last suffix makes it.</summary>
    public static (string Source, CloneNameKind Kind) Classify(string name)
    {
        // glibc names its own calls' target __GI_name (in its debug file): name itself, or a copy of it.
        if (name.StartsWith(GlibcInternalPrefix, StringComparison.Ordinal) && name.Length > GlibcInternalPrefix.Length)
        {
            var (of, how) = Classify(name[GlibcInternalPrefix.Length..]);
            return (of, how == CloneNameKind.Source ? CloneNameKind.LocalAlias : how);
        }
        var match = Suffixes().Match(name);
        if (!match.Success || match.Index == 0)
            return (name, CloneNameKind.Source);
        var last = match.Groups["suffix"].Captures[^1].Value;
        var kind = last switch
        {
            "cold" => CloneNameKind.SplitPart,
            "localalias" => CloneNameKind.LocalAlias,
            _ => CloneNameKind.Clone,
        };
        return (name[..match.Index], kind);
    }

    private const string GlibcInternalPrefix = "__GI_";

    /// <summary>The function <paramref name="name"/> is a copy of: itself when it has no suffix of gcc's.</summary>
    public static string Source(string name) => Classify(name).Source;

    /// <summary>The name without its last suffix: the function a split part belongs to (<c>f.isra.0.cold</c> → <c>f.isra.0</c>).</summary>
    public static string Owner(string name)
    {
        var match = LastSuffix().Match(name);
        return match.Success && match.Index > 0 ? name[..match.Index] : name;
    }

    // The numbered suffixes need their number (a bare ".part" is someone's name); .cold may have one.
    [GeneratedRegex(@"(?:\.(?<suffix>isra|constprop|part)\.\d+|\.(?<suffix>cold)(?:\.\d+)?|\.(?<suffix>localalias))+$", RegexOptions.CultureInvariant | RegexOptions.ExplicitCapture)]
    private static partial Regex Suffixes();

    [GeneratedRegex(@"(?:\.(?:isra|constprop|part)\.\d+|\.cold(?:\.\d+)?|\.localalias)$", RegexOptions.CultureInvariant)]
    private static partial Regex LastSuffix();
}
