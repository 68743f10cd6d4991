using Spectre.Console;

namespace LivePatch.Bench.Common;

/// <summary>A table for the terminal (Spectre.Console): text columns on the left, figures right-aligned.</summary>
internal static class TerminalTable
{
    /// <summary>The table; its first <paramref name="leftColumns"/> columns are left-aligned, the rest right-aligned. Cells are text, not markup.</summary>
    public static Table Build(string title, IReadOnlyList<string> header, IEnumerable<string[]> rows, int leftColumns)
    {
        var table = new Table { Title = new TableTitle(Markup.Escape(title)), Border = TableBorder.Rounded };
        for (var i = 0; i < header.Count; i++)
            table.AddColumn(new TableColumn(Markup.Escape(header[i])) { Alignment = i < leftColumns ? Justify.Left : Justify.Right });
        foreach (var row in rows)
            table.AddRow([.. row.Select(Markup.Escape)]);
        return table;
    }
}
