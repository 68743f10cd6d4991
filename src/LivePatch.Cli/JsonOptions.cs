using System.Text.Json;

namespace LivePatch.Cli;

/// <summary>How the CLI writes JSON.</summary>
internal static class JsonOptions
{
    public static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
}
