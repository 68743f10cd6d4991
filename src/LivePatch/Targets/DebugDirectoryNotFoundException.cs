namespace LivePatch.Targets;

/// <summary>A debug directory the caller named (<c>--debug-dir</c>, <see cref="TargetProcess.Open"/>) does not exist.</summary>
public sealed class DebugDirectoryNotFoundException : LivePatchException
{
    /// <inheritdoc />
    public override FailureKind Kind => FailureKind.Input;

    /// <summary>Creates the exception for <paramref name="directory"/>.</summary>
    public DebugDirectoryNotFoundException(string directory)
        : base($"debug directory '{directory}' does not exist (a directory of debug files, laid out as /usr/lib/debug is)")
    {
        Directory = directory;
    }

    /// <summary>The directory as it was given.</summary>
    public string Directory { get; }
}
