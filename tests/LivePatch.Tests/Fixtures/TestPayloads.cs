using LivePatch.Payloads;

namespace LivePatch.Tests.Fixtures;

/// <summary>Payload objects built from tests/fixtures with gcc, as an operator builds them.</summary>
internal static class TestPayloads
{
    /// <summary>
    /// Compiles <paramref name="source"/> (a fixture path) into a payload object: <c>gcc -c FLAGS -fPIC
    /// -ffunction-sections</c>, or without <c>-fPIC</c> when <paramref name="pic"/> is false (FLAGS then say how).
    /// </summary>
    public static string Build(string source, string flags = "-O2", bool pic = true)
    {
        var name = Path.GetFileNameWithoutExtension(source);
        var output = Path.Combine(ExternalTool.ScratchDirectory("payloads"), name + ".o");
        return Gcc.Compile(source, $"-c {flags}{(pic ? " -fPIC" : "")} -ffunction-sections -I {Path.Combine(AppContext.BaseDirectory, "include")}", output);
    }
}
