using System.Text;

namespace LivePatch.Bench.Common;

/// <summary>A Markdown table for docs/benchmarks.md: text columns on the left, figures right-aligned.</summary>
internal static class MarkdownTable
{
    /// <summary>The table, one line per row; its first <paramref name="leftColumns"/> columns are left-aligned, the rest right-aligned.</summary>
    public static string Format(IReadOnlyList<string> header, IEnumerable<string[]> rows, int leftColumns)
    {
        var text = new StringBuilder();
        text.Append("| ").AppendJoin(" | ", header).AppendLine(" |");
        text.Append("| ").AppendJoin(" | ", header.Select((_, i) => i < leftColumns ? "---" : "---:")).AppendLine(" |");
        foreach (var row in rows)
            text.Append("| ").AppendJoin(" | ", row).AppendLine(" |");
        return text.ToString();
    }
}
