namespace LivePatch.Elf.ElfInternal;

/// <summary>Text taken from a file (a section or symbol name) made fit for a one-line message.</summary>
internal static class PrintableText
{
    /// <summary>True when <paramref name="text"/> holds a control character (a newline, a carriage return, an escape).</summary>
    public static bool HasControl(string text) => text.Any(char.IsControl);

    /// <summary><paramref name="text"/> with each control character shown as <c>\uXXXX</c>.</summary>
    public static string Escape(string text) => Escape(text, c => $"\\u{(int)c:x4}");

    /// <summary>
    /// <paramref name="text"/> with each control character shown as <c>\xNN</c>, as a terminal user writes an escape
    /// (strings from a target's record, a command line's arguments).
    /// </summary>
    public static string EscapeAsBytes(string text) => Escape(text, c => $"\\x{(int)c:x2}");

    private static string Escape(string text, Func<char, string> show) =>
        HasControl(text) ? string.Concat(text.Select(c => char.IsControl(c) ? show(c) : c.ToString())) : text;
}
