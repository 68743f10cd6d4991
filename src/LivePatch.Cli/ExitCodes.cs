namespace LivePatch.Cli;

/// <summary>The exit codes every livepatch command uses; docs/cli.md lists them.</summary>
internal static class ExitCodes
{
    /// <summary>The command did what was asked.</summary>
    public const int Success = 0;

    /// <summary>The command line was wrong (unknown command or option, missing argument).</summary>
    public const int Usage = 1;
}
