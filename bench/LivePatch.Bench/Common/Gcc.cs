namespace LivePatch.Bench.Common;

/// <summary>Builds the benchmarks' C targets and payloads with gcc.</summary>
internal static class Gcc
{
    /// <summary>Runs gcc with <paramref name="arguments"/>; a failed build throws with gcc's messages.</summary>
    public static void Compile(IReadOnlyList<string> arguments)
    {
        var gcc = ExternalProgram.Run("gcc", arguments, TimeSpan.FromMinutes(10));
        if (gcc.ExitCode != 0)
            throw new InvalidOperationException($"gcc {string.Join(' ', arguments)} failed: {gcc.Errors}");
    }

    /// <summary>Compiles <paramref name="source"/> (relative to the repository) into a payload object LivePatch can load.</summary>
    public static void CompilePayload(string root, string source, string output) =>
        Compile(["-c", "-O2", "-fPIC", "-ffunction-sections", "-I", Path.Combine(root, "native", "include"), Path.Combine(root, source), "-o", output]);
}
