using System.Globalization;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

/// <summary>
/// MiniDebugInfo: a stripped program carrying, in <c>.gnu_debugdata</c>, an xz-compressed ELF whose <c>.symtab</c>
/// names the functions stripping removed, made as Fedora's find-debuginfo makes it.
/// </summary>
[Collection(ProcessTests.Name)]
public class MiniDebugInfoTests
{
    /// <summary>
    /// Embeds the MiniDebugInfo of <paramref name="debug"/> into <paramref name="stripped"/> as find-debuginfo does: the
    /// functions and data (nm types T, t, D) not in <c>.dynsym</c>, only their <c>.symtab</c>, xz-compressed.
    /// </summary>
    internal static void EmbedMiniDebugInfo(string stripped, string debug)
    {
        static IEnumerable<string[]> Nm(params string[] arguments) =>
            ExternalTool.Run("nm", [.. arguments, "--format=posix", "--defined-only"])
                .Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' '));
        var dynamic = Nm("-D", stripped).Select(f => f[0]).ToHashSet(StringComparer.Ordinal);
        var keep = Nm(debug).Where(f => f[1] is "T" or "t" or "D").Select(f => f[0]).Where(n => !dynamic.Contains(n)).Distinct().Order(StringComparer.Ordinal);
        var keepFile = stripped + ".keep";
        var mini = stripped + ".mini";
        File.WriteAllLines(keepFile, keep);
        ExternalTool.Run("objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment", $"--keep-symbols={keepFile}", debug, mini);
        ExternalTool.Run("xz", "-f", mini);
        ExternalTool.Run("objcopy", "--add-section", $".gnu_debugdata={mini}.xz", stripped);
    }

    [Fact]
    public void A_static_function_only_MiniDebugInfo_names_resolves_and_is_patched_and_reverted()
    {
        var (stripped, debug, _) = DebugFileTests.Split("mini");
        EmbedMiniDebugInfo(stripped, debug);
        Assert.Null(ElfFile.Load(stripped).FindSection(".symtab"));
        using var worker = RunningTarget.StartExecutable(stripped, "1");
        using (var target = TargetProcess.Open(worker.Pid))
        {
            var secret = target.ResolveSymbol("secret");

            Assert.Equal(worker.ReadyAddress("secret"), secret.Address);
            Assert.Equal(ElfSymbolBinding.Local, secret.Binding);
            Assert.True(secret.FromDebugFile);
            Assert.Equal("mini.gnu_debugdata", target.MainModule.DebugFile);
            Assert.True(target.MainModule.UsesMiniDebugInfo);
            var missing = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("results"));
            Assert.Contains("mini is stripped, its MiniDebugInfo (mini.gnu_debugdata) does not name it and no debug file of it was found", missing.Message, StringComparison.Ordinal);
        }
        var listed = LivepatchCli.Run("symbols", worker.Pid.ToString(CultureInfo.InvariantCulture), "mini!secret");
        Assert.Matches($@"mini!secret\s*│\s*0x{worker.ReadyAddress("secret"):x}\s*│.*MiniDebugInfo mini\.gnu_debugdata", listed.Output.ReplaceLineEndings(" "));

        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);
        patcher.Apply(TestPayloads.Build("live/apply/secret.c"));
        worker.AssertValueBecomes("secret", 71);
        patcher.Revert("secret");
        worker.AssertValueBecomes("secret", 8);
    }

    [Fact]
    public void Xz_data_that_is_corrupt_or_decompresses_beyond_the_limit_is_refused()
    {
        var directory = ExternalTool.ScratchDirectory("minidebuginfo");
        var zeros = Path.Combine(directory, "zeros");
        File.WriteAllBytes(zeros, new byte[3 << 20]);
        ExternalTool.Run("xz", "-f", zeros);
        var compressed = File.ReadAllBytes(zeros + ".xz");

        Assert.Equal(3 << 20, MiniDebugInfo.Decompress(compressed, MiniDebugInfo.SizeLimit).Length);
        var tooBig = Assert.Throws<InvalidDataException>(() => MiniDebugInfo.Decompress(compressed, 1 << 20));
        Assert.Contains("decompresses to more than 1 MiB", tooBig.Message, StringComparison.Ordinal);
        var corrupt = (byte[])compressed.Clone();
        corrupt[corrupt.Length / 2] ^= 0xff;
        Assert.Throws<InvalidDataException>(() => MiniDebugInfo.Decompress(corrupt, MiniDebugInfo.SizeLimit));
        var truncated = Assert.Throws<InvalidDataException>(() => MiniDebugInfo.Decompress(compressed.AsSpan(0, compressed.Length - 20), MiniDebugInfo.SizeLimit));
        Assert.Contains("truncated", truncated.Message, StringComparison.Ordinal);
        Assert.Contains("not in xz format", Assert.Throws<InvalidDataException>(() => MiniDebugInfo.Decompress("these bytes are not an xz stream"u8, 1 << 20)).Message, StringComparison.Ordinal);
    }
}
