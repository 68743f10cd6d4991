using System.CommandLine;
using LivePatch.Elf.ElfInternal;

namespace LivePatch.Cli;

/// <summary>A command line that does not parse, said in one line (exit 1) instead of the help text.</summary>
internal static class UsageErrors
{
    /// <summary>The first parse error, without its closing full stop, and the help to read: <c>'abc' is not a process id (...) (see livepatch apply --help)</c>.</summary>
    public static string Describe(ParseResult parse)
    {
        // "Required command was not provided" comes first for `livepatch bogus`: the unknown word says more.
        var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
        var message = error.Message.TrimEnd('.');
        if (message.Length > 0)
            message = char.ToLowerInvariant(message[0]) + message[1..];
        var command = parse.CommandResult.Command;
        var path = command is RootCommand ? "livepatch" : $"livepatch {command.Name}";
        // Arguments come from the user's shell and may hold control characters: they reach the terminal escaped.
        return $"{PrintableText.EscapeAsBytes(message)} (see {path} --help)";
    }
}
