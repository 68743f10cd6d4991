using System.CommandLine;
using System.Text.Json;
using LivePatch.X86;
using Spectre.Console;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch cpu</c>: the CPU features alternatives are chosen by, as this machine reports them.</summary>
internal static class CpuCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print the features as a JSON object instead of a table." };
        var command = new Command("cpu", "Show the CPU features that alternatives are chosen by, read with CPUID.")
        {
            json,
        };
        command.SetAction(parse =>
        {
            var features = CpuFeatures.Detect();
            if (parse.GetValue(json))
            {
                var map = Enum.GetValues<CpuFeature>().ToDictionary(CpuFeatures.LinuxName, features.Has);
                Console.WriteLine(JsonSerializer.Serialize(map, JsonOptions.Indented));
                return ExitCodes.Success;
            }
            var table = new Table().AddColumns("feature", "linux name", "number", "present");
            foreach (var feature in Enum.GetValues<CpuFeature>())
                table.AddRow(feature.ToString(), CpuFeatures.LinuxName(feature), ((int)feature).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    features.Has(feature) ? "[green]yes[/]" : "[grey]no[/]");
            AnsiConsole.Write(table);
            return ExitCodes.Success;
        });
        return command;
    }
}
