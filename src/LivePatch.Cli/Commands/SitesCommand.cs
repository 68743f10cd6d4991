using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.X86;
using Spectre.Console;

namespace LivePatch.Cli.Commands;

/// <summary><c>livepatch sites FILE</c>: every build-time site of a module, disassembled, and what this CPU would get.</summary>
internal static class SitesCommand
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command Create()
    {
        var file = new Argument<FileInfo>("file") { Description = "An executable or shared object built with livepatch/sites.h." };
        var json = new Option<bool>("--json") { Description = "Print the sites as JSON." };
        var command = new Command("sites", $"List the build-time sites of a module (alternatives, lock prefixes): the original and replacement instructions and which one this CPU gets, and why.\n{ExitCodes.Help}")
        {
            file, json,
        };
        command.SetAction(parse => LiveCommands.Run(_ =>
        {
            var path = parse.GetValue(file)!.FullName;
            if (!File.Exists(path))
                throw new FileNotFoundException($"no file {path}", path);
            var choices = SiteChooser.Choose(ElfFile.Load(path), CpuFeatures.Detect());
            var rows = choices.Select(c => new
            {
                Kind = c.Kind switch { SiteKind.Alternative => "alternative", SiteKind.LockPrefix => "lock prefix", _ => "static key" },
                Address = $"0x{c.Address:x}",
                Length = c.Original.Length,
                Original = Disassemble(c.Original, c.Address),
                Replacement = Disassemble(c.Replacement, c.Address),
                Chosen = c.UseReplacement ? "replacement" : "original",
                c.Reason,
            }).ToList();
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(rows, Json));
                return;
            }
            if (rows.Count == 0)
            {
                Console.WriteLine($"{path} has no build-time sites");
                return;
            }
            var table = new Table().AddColumns("kind", "address", "bytes", "original", "replacement", "chosen", "why");
            foreach (var row in rows)
                table.AddRow(row.Kind, row.Address, row.Length.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Original),
                    Markup.Escape(row.Replacement), row.Chosen, Markup.Escape(row.Reason));
            AnsiConsole.Write(table);
        }));
        return command;
    }

    // GNU syntax, as objdump and the .S patchlets write it; NOP padding is left out.
    private static string Disassemble(byte[] code, ulong address)
    {
        if (code.Length == 0)
            return "(nothing)";
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(code), address);
        var formatter = new GasFormatter();
        formatter.Options.UppercaseHex = false;
        formatter.Options.SpaceAfterOperandSeparator = true;
        var output = new StringOutput();
        var text = new List<string>();
        while (decoder.IP < address + (ulong)code.Length)
        {
            decoder.Decode(out var instruction);
            if (instruction.Mnemonic == Mnemonic.Nop)
                continue;
            formatter.Format(instruction, output);
            text.Add(output.ToStringAndReset());
        }
        return text.Count == 0 ? "(nops)" : string.Join("; ", text);
    }
}
