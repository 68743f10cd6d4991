namespace LivePatch.Bench.Common;

/// <summary>
/// docs/benchmarks.md, where each mode's <c>--write-docs</c> replaces its measured section: the text between
/// <c>&lt;!-- NAME:begin --&gt;</c> and <c>&lt;!-- NAME:end --&gt;</c>. The markers and all around them stay as they are.
/// </summary>
internal static class BenchmarksDocument
{
    /// <summary>Puts <paramref name="body"/> (whole lines) between the markers of section <paramref name="name"/> and returns the file's path.</summary>
    public static string ReplaceSection(string root, string name, string body)
    {
        var path = Path.Combine(root, "docs", "benchmarks.md");
        var beginMarker = $"<!-- {name}:begin -->";
        var endMarker = $"<!-- {name}:end -->";
        var text = File.ReadAllText(path);
        var begin = text.IndexOf(beginMarker, StringComparison.Ordinal);
        var end = text.IndexOf(endMarker, StringComparison.Ordinal);
        if (begin < 0 || end < begin)
            throw new InvalidOperationException($"{path} has no '{beginMarker}' … '{endMarker}' section to replace");
        if (!body.EndsWith('\n'))
            throw new ArgumentException($"the {name} section must end with a line break, or its end marker would not start a line", nameof(body));
        File.WriteAllText(path, string.Concat(text.AsSpan(0, begin + beginMarker.Length), "\n", body, text.AsSpan(end)));
        return path;
    }
}
