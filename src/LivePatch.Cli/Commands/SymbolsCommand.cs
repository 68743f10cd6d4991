using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.X86;
using Spectre.Console;

namespace LivePatch.Cli.Commands;

/// <summary>
/// <c>livepatch symbols PID [PATTERN] [--json]</c>: the functions a process has that match, with what a payload needs to
/// know to name one — the way a user finds what to write in <c>LIVEPATCH_REPLACE</c>. Needs no ptrace.
/// </summary>
internal static class SymbolsCommand
{
    /// <summary>One function of the process.</summary>
    internal sealed record FunctionRow(
        string Module, string Name, [property: JsonIgnore] ulong AddressValue, ulong Size, string Binding, string Table, bool Ifunc, bool OldVersion, string? CloneOf, string? TooShort)
    {
        /// <summary>The address, in hex, as the rest of livepatch prints it.</summary>
        public string Address => $"0x{AddressValue:x}";

        /// <summary>How a payload names it.</summary>
        public string Spec => $"{Module}!{Name}";
    }

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public static Command Create()
    {
        var pid = PayloadCommandOptions.PidArgument();
        var pattern = new Argument<string?>("pattern")
        {
            Description = "Which functions: a name or module!name, with * and ? as wildcards (default: every function).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var json = new Option<bool>("--json") { Description = "Print the functions as JSON." };
        var debugDirectories = PayloadCommandOptions.DebugDirectoryOption();
        var command = new Command("symbols", "List the functions of a running process that match a pattern: module, name, address, size, binding, symbol table, IFUNC, gcc clone, too short to patch. Needs no ptrace.")
        {
            pid, pattern, json, debugDirectories,
        };
        command.SetAction(parse => LiveCommands.Run(_ =>
        {
            using var target = TargetProcess.Open(parse.GetValue(pid), PayloadCommandOptions.DebugDirectories(parse, debugDirectories));
            var rows = Find(target, parse.GetValue(pattern) ?? "*");
            if (parse.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(rows, Json));
                return;
            }
            if (rows.Count == 0)
            {
                Console.WriteLine($"process {target.Pid} has no function matching '{parse.GetValue(pattern)}'");
                // Names of stripped modules come from debug files: say which modules had none, and where they were looked for.
                foreach (var module in target.Modules.DistinctBy(m => m.Path).Where(m => m.IsStripped && m.DebugSymbols.Count == 0 && !m.UsesMiniDebugInfo))
                    Console.WriteLine($"  {module.Name} is stripped and no debug file was found for it (looked for {(module.DebugFilesLooked.Count == 0 ? "none" : string.Join(", ", module.DebugFilesLooked))}); --debug-dir DIR names where yours are");
                return;
            }
            var table = new Table().AddColumns("module!name", "address", "size", "binding", "table", "notes");
            foreach (var row in rows)
                table.AddRow(Markup.Escape(row.Spec), row.Address, row.Size.ToString(CultureInfo.InvariantCulture), row.Binding, row.Table, Markup.Escape(Notes(row)));
            AnsiConsole.Write(table);
        }));
        return command;
    }

    /// <summary>The functions of <paramref name="target"/> whose name or <c>module!name</c> matches <paramref name="pattern"/>, by module then address.</summary>
    internal static List<FunctionRow> Find(TargetProcess target, string pattern)
    {
        var bang = pattern.LastIndexOf('!');
        var (modulePattern, namePattern) = bang < 0 ? (null, pattern) : (pattern[..bang], pattern[(bang + 1)..]);
        var names = Wildcards(namePattern);
        var modules = modulePattern is null ? null : Wildcards(modulePattern);
        var rows = new List<FunctionRow>();
        foreach (var module in target.Modules.DistinctBy(m => m.Path))
        {
            // A module as apply names it (file name, soname, without version, path), or by wildcards on its file name.
            if (modulePattern is not null && !module.Matches(modulePattern) && !modules!.IsMatch(module.Name))
                continue;
            IReadOnlyList<TargetSymbol> symbols;
            try
            {
                symbols = [.. module.Symbols, .. module.DebugSymbols];
            }
            catch (LivePatchException)
            {
                continue; // a module whose file cannot be read: nothing to list
            }
            foreach (var symbol in symbols.Where(s => s.IsFunction && names.IsMatch(s.Name))
                         .DistinctBy(s => (s.Name, s.Address)).OrderBy(s => s.Address))
            {
                var (source, kind) = CloneNames.Classify(symbol.Name);
                rows.Add(new FunctionRow(module.Name, symbol.Name, symbol.Address, symbol.Size, symbol.Binding.ToString().ToLowerInvariant(),
                    symbol.IsDynamic ? ".dynsym" : !symbol.FromDebugFile ? ".symtab" : module.UsesMiniDebugInfo ? $"MiniDebugInfo {module.DebugFile}" : $"debug file {module.DebugFile}", symbol.Type == ElfSymbolType.GnuIndirectFunction, symbol.IsNonDefaultVersion,
                    kind == CloneNameKind.Source ? null : source, TooShort(module, symbol)));
            }
        }
        return rows;
    }

    private static Regex Wildcards(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant);

    // Room for the 5-byte jump after any endbr64, as apply checks it; null when it fits or the size is unknown.
    private static string? TooShort(TargetModule module, TargetSymbol symbol)
    {
        if (symbol.Size == 0 || symbol.Type == ElfSymbolType.GnuIndirectFunction)
            return null;
        var code = module.Elf.ReadLoaded(symbol.Address - module.LoadBias, (int)Math.Min(symbol.Size, 64)).ToArray();
        var offset = code.Length == 0 ? 0 : InstructionBoundaries.PatchableEntryOffset(code);
        return (ulong)(offset + Branch.Rel32Length) > symbol.Size ? $"{symbol.Size} bytes{(offset > 0 ? $" ({offset} of them endbr64)" : "")}" : null;
    }

    private static string Notes(FunctionRow row) => string.Join("; ", new[]
    {
        row.Ifunc ? "IFUNC: the symbol is its resolver" : null,
        row.OldVersion ? "an old symbol version: the default one is what a name resolves to" : null,
        row.CloneOf is { } of ? $"gcc copy of {of}" : null,
        row.TooShort is { } why ? $"too short to patch: {why}" : null,
    }.OfType<string>());
}
