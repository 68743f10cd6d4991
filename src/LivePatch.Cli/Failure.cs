using LivePatch.Live;
using LivePatch.Poke;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Cli;

/// <summary>Turns what the library throws into one line on stderr and an exit code.</summary>
internal static class Failure
{
    public static int Report(Exception error)
    {
        var (code, message) = error switch
        {
            TargetException { Error: TargetError.Busy } e => (ExitCodes.Refused, e.Message),
            TargetException { Error: TargetError.Timeout } e => (ExitCodes.Timeout, e.Message),
            TargetException e => (ExitCodes.Target, e.Message),
            PayloadException e => (ExitCodes.Payload, e.Message),
            SymbolResolutionException e => (ExitCodes.Payload, e.Message),
            LivePatchException e => (ExitCodes.Refused, e.Message),
            TextPokeException e => (ExitCodes.Refused, e.Message),
            RelocationException e => (ExitCodes.Payload, e.Message),
            BranchOutOfRangeException e => (ExitCodes.Payload, e.Message),
            FileNotFoundException e => (ExitCodes.Payload, e.Message),
            Elf.ElfFormatException e => (ExitCodes.Payload, e.Message),
            Sites.SiteTableException e => (ExitCodes.Payload, e.Message),
            _ => (ExitCodes.Internal, $"internal error ({error.GetType().Name}): {error.Message}"),
        };
        Console.Error.WriteLine($"livepatch: {message}");
        return code;
    }
}
