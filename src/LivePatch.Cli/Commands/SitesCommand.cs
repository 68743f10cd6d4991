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
internal static partial class SitesCommand
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command Create()
    {
        var file = new Argument<string>("file-or-pid") { Description = "An executable or shared object built with livepatch/sites.h, or the PID of a running process (its modules are read as mapped)." };
        var json = new Option<bool>("--json") { Description = "Print the sites as JSON." };
        var up = new Option<bool>("--up")
        {
            Description = "For a PID: drop every lock prefix (uniprocessor code) when only one thread can run: one CPU online, every thread bound to one CPU, or a single thread — then livepatch stays attached and puts them back before the process's next thread runs (Ctrl-C puts them back and exits).",
        };
        var smp = new Option<bool>("--smp") { Description = "For a PID: put every dropped lock prefix back." };
        var command = new Command("sites", "List the build-time sites of a module or of every module of a running process (alternatives, lock prefixes, static keys, call sites): the original and replacement instructions, which one this CPU (or the default call-site backend) gets and why, and in a process their current state.")
        {
            file, json, up, smp,
        };
        var shared = SiteCommandOptions.AddToSitesCommand(command);
        command.Validators.Add(result =>
        {
            if (result.GetValue(up) && result.GetValue(smp))
                result.AddError("--up and --smp exclude each other");
            else if ((result.GetValue(up) || result.GetValue(smp)) && !int.TryParse(result.GetValue(file), NumberStyles.None, CultureInfo.InvariantCulture, out _))
                result.AddError("--up and --smp change a running process: give its PID");
        });
        command.SetAction(parse => LiveCommands.Run(cancellation =>
        {
            var argument = parse.GetValue(file)!;
            if (parse.GetValue(up) || parse.GetValue(smp))
            {
                var target = int.Parse(argument, CultureInfo.InvariantCulture);
                SwitchLockPrefixes(target, parse.GetValue(up), shared.ToSitePatcherOptions(parse, target, cancellation));
                return;
            }
            var cpu = CpuFeatures.Detect();
            var rows = int.TryParse(argument, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && !File.Exists(argument)
                ? ProcessRows(pid, cpu)
                : FileRows(argument, cpu);
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(rows, Json));
                return;
            }
            if (rows.Count == 0)
            {
                Console.WriteLine($"{argument} has no build-time sites");
                return;
            }
            var table = new Table().AddColumns("module", "kind", "name", "address", "bytes", "original", "replacement", "chosen", "why", "now");
            foreach (var row in rows)
                table.AddRow(Markup.Escape(row.Module), row.Kind, Markup.Escape(row.Name ?? ""), row.Address, row.Length.ToString(CultureInfo.InvariantCulture), Markup.Escape(row.Original),
                    Markup.Escape(row.Replacement), row.Chosen, Markup.Escape(row.Reason), row.State ?? "");
            AnsiConsole.Write(table);
        }));
        return command;
    }

    private sealed record Row(string Module, string Kind, string? Name, string Address, int Length, string Original, string Replacement, string Chosen, string Reason, string? State);

    private static List<Row> FileRows(string path, CpuFeatures cpu)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"no file {path}", path);
        return [.. SiteChooser.Choose(ElfFile.Load(path), cpu).Select(c => ToRow(Path.GetFileName(path), c, 0, null))];
    }

    // Each module's sites as mapped, with what its code holds now (read through /proc/PID/mem; no ptrace).
    private static List<Row> ProcessRows(int pid, CpuFeatures cpu)
    {
        using var target = Targets.TargetProcess.Open(pid);
        var rows = new List<Row>();
        foreach (var module in target.Modules)
        {
            if (module.Elf.FindSection(SiteTables.AlternativesTable) is null && module.Elf.FindSection(SiteTables.LockPrefixTable) is null
                && module.Elf.FindSection(SiteTables.StaticKeyTable) is null && module.Elf.FindSection(SiteTables.CallSiteTable) is null)
                continue;
            // Call sites are decided from the functions their slots hold now.
            foreach (var choice in SiteChooser.Choose(target, module, cpu))
            {
                var now = target.ReadMemory(choice.Address + module.LoadBias, choice.Original.Length);
                var state = choice.Kind switch
                {
                    SiteKind.Alternative => now.AsSpan().SequenceEqual(choice.Original) ? "original" : "rewritten",
                    SiteKind.LockPrefix => now[0] == 0xf0 ? "lock" : "dropped",
                    SiteKind.CallSite => now.AsSpan().SequenceEqual(choice.Original) ? "indirect" : now.AsSpan().SequenceEqual(choice.Replacement) ? "rewritten" : "other",
                    _ => now.AsSpan().SequenceEqual(SiteTables.StaticKeyNop) ? "off" : "on",
                };
                rows.Add(ToRow(module.Name, choice, module.LoadBias, state));
            }
        }
        return rows;
    }

    private static Row ToRow(string module, SiteChoice c, ulong bias, string? state) => new(
        module,
        c.Kind switch { SiteKind.Alternative => "alternative", SiteKind.LockPrefix => "lock prefix", SiteKind.CallSite => "callsite", _ => "static key" },
        c.Name,
        $"0x{c.Address + bias:x}",
        c.Original.Length,
        Disassemble(c.Original, c.Address + bias),
        Disassemble(c.Replacement, c.Address + bias),
        c.UseReplacement ? "replacement" : "original",
        c.Reason,
        state);

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
