namespace LivePatch.Cli;

/// <summary>Turns what the library throws into one line on stderr and an exit code.</summary>
internal static class Failure
{
    public static int Report(Exception error)
    {
        var (code, message) = error switch
        {
            LivePatchException e => (ExitCode(e.Kind), e.Message),
            FileNotFoundException e => (ExitCodes.Payload, e.Message),
            _ => (ExitCodes.Internal, $"internal error ({error.GetType().Name}): {error.Message}"),
        };
        Console.Error.WriteLine($"livepatch: {message}");
        return code;
    }

    private static int ExitCode(FailureKind kind) => kind switch
    {
        FailureKind.Target => ExitCodes.Target,
        FailureKind.Input => ExitCodes.Payload,
        FailureKind.Refused => ExitCodes.Refused,
        FailureKind.Timeout => ExitCodes.Timeout,
        _ => ExitCodes.Internal,
    };
}
