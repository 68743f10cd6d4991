namespace LivePatch.Bench.Common;

/// <summary>The clone of the repository the benchmark runs in: its sources, native headers and docs/benchmarks.md.</summary>
internal static class RepositoryRoot
{
    /// <summary>
    /// The directory holding LivePatch.sln and <paramref name="required"/> (a path inside the repository, with '/'),
    /// looked for above the working directory, then above the program.
    /// </summary>
    public static string Find(string required)
    {
        var relative = required.Replace('/', Path.DirectorySeparatorChar);
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "LivePatch.sln")) && File.Exists(Path.Combine(directory.FullName, relative)))
                    return directory.FullName;
            }
        }
        throw new InvalidOperationException($"run from inside the LivePatch repository: {required} not found");
    }
}
