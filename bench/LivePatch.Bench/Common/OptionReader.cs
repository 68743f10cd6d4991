using System.Globalization;
using System.Numerics;

namespace LivePatch.Bench.Common;

/// <summary>
/// The options after a mode's name, read one at a time. Every mistake is a <see cref="FormatException"/> naming the
/// option, which <see cref="BenchmarkMode"/> answers with the mode's usage line.
/// </summary>
internal sealed class OptionReader(string[] args)
{
    private int _index = -1;

    /// <summary>The next option, or null after the last.</summary>
    public string? Next() => ++_index < args.Length ? args[_index] : null;

    /// <summary>The word after the current option.</summary>
    public string Value() => _index + 1 < args.Length ? args[++_index] : throw new FormatException($"{args[_index]} needs a value");

    /// <summary>The current option's value, a positive integer.</summary>
    public int PositiveInt()
    {
        var option = args[_index];
        return Positive<int>(Value(), option);
    }

    /// <summary>The current option's value, a positive 64-bit integer.</summary>
    public long PositiveLong()
    {
        var option = args[_index];
        return Positive<long>(Value(), option);
    }

    /// <summary>The current option's value, a comma-separated list of positive integers.</summary>
    public int[] PositiveInts()
    {
        var option = args[_index];
        return [.. Value().Split(',').Select(text => Positive<int>(text, option))];
    }

    /// <summary>The error for an option the mode does not know.</summary>
    public FormatException Unknown() => new($"unknown option {args[_index]}");

    private static T Positive<T>(string text, string option) where T : IBinaryInteger<T> =>
        T.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) && value > T.Zero
            ? value
            : throw new FormatException($"{option}: '{text}' is not a positive integer");
}
