namespace LivePatch.Sites;

/// <summary>
/// The one exception <see cref="SiteTables"/> throws for a site table that is malformed or lies;
/// the message names the table, the entry index and what is wrong.
/// </summary>
public sealed class SiteTableException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for entry <paramref name="index"/> of <paramref name="table"/>, or for the whole table when the index is null.</summary>
    public SiteTableException(string table, int? index, string reason)
        : base(index is { } i ? $"{table} entry {i}: {reason}" : $"{table}: {reason}")
    {
        Table = table;
        Index = index;
    }

    /// <summary>Name of the table section, such as <c>.lp.altinstructions</c>.</summary>
    public string Table { get; }

    /// <summary>Index of the bad entry, or null when the table as a whole is wrong.</summary>
    public int? Index { get; }
}
