namespace LivePatch.Bench.Common;

/// <summary>A temporary directory for what a mode compiles (its target, its payload), removed with all in it on Dispose.</summary>
internal sealed class BuildDirectory(string mode) : IDisposable
{
    private readonly DirectoryInfo _directory = Directory.CreateTempSubdirectory($"livepatch-{mode}-");

    /// <summary>The path of <paramref name="name"/> inside the directory.</summary>
    public string File(string name) => Path.Combine(_directory.FullName, name);

    public void Dispose() => _directory.Delete(recursive: true);
}
