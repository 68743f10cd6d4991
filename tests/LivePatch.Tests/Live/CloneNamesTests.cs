using LivePatch.Live;

namespace LivePatch.Tests.Live;

/// <summary>gcc's clone suffixes read off symbol names: one row of Data/clone-names.txt per case.</summary>
public class CloneNamesTests
{
    public static TheoryData<string, string, string, string> Rows()
    {
        var rows = new TheoryData<string, string, string, string>();
        foreach (var line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "Live", "Data", "clone-names.txt")))
        {
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            rows.Add(fields[0], fields[1], fields[2], fields[3]);
        }
        return rows;
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void A_symbol_name_says_which_function_it_copies_and_how(string symbol, string source, string kind, string owner)
    {
        Assert.Equal((source, Enum.Parse<CloneNameKind>(kind)), CloneNames.Classify(symbol));
        Assert.Equal(owner, CloneNames.Owner(symbol));
    }
}
