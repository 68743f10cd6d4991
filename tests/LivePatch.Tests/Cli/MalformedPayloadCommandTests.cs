using System.Globalization;
using LivePatch.Cli;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Payloads;
using static LivePatch.Tests.Payloads.PayloadBytes;

namespace LivePatch.Tests.Cli;

/// <summary>
/// Issue 12, part 2, at the command line: the corrupted payloads that once ended in exit 70 (internal error) are
/// refused by check, load and apply with the payload exit code and one line naming the file; the target is unchanged.
/// </summary>
[Collection(ProcessTests.Name)]
public class MalformedPayloadCommandTests
{
    private const ulong Alloc = 0x2, ExecInstr = 0x4;

    public static TheoryData<string, string> Shapes => new()
    {
        { "function section without SHF_ALLOC", "'first_fixed'" },
        { "hook section without SHF_EXECINSTR", "'check_ready'" },
        { "sizes of .text and .text.first_fixed swapped", ".text.first_fixed" },
        { "sh_addralign 0x80000000", "sh_addralign 0x80000000" },
        { "st_size 2^63", "st_size 0x8000000000000000" },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Check_load_and_apply_refuse_with_the_payload_exit_code(string shape, string fragment)
    {
        var file = Path.Combine(ExternalTool.ScratchDirectory("malformed"), string.Concat(shape.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '-')) + ".o");
        File.WriteAllBytes(file, Mutate(shape));
        using var idle = RunningTarget.Start("targets/idle.c", "-O2 -g");
        var pid = idle.Pid.ToString(CultureInfo.InvariantCulture);
        var before = TargetSnapshot.Take(idle.Pid, idle.ReadyAddress("idle_first"), idle.ReadyAddress("idle_second"));

        foreach (var command in new[] { "check", "load", "apply" })
        {
            var result = LivepatchCli.Run(command, pid, file);

            Assert.True(result.ExitCode == ExitCodes.Payload, $"livepatch {command} ({shape}) exited {result.ExitCode}: {result.Error}");
            var line = Assert.Single(result.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith($"livepatch: payload {file}: ", line, StringComparison.Ordinal);
            Assert.Contains(fragment, line, StringComparison.Ordinal);
        }

        before.AssertUnchanged();
    }

    private static byte[] Mutate(string shape)
    {
        var bytes = File.ReadAllBytes(LivePayloads.Build(shape.StartsWith("hook", StringComparison.Ordinal) ? "mutants/hooked.c" : "mutants/base.c", "-O2 -fPIC"));
        switch (shape)
        {
            case "function section without SHF_ALLOC":
                SetSectionField(bytes, ".text.first_fixed", 8, SectionField(bytes, ".text.first_fixed", 8) & ~Alloc);
                break;
            case "hook section without SHF_EXECINSTR":
                SetSectionField(bytes, ".text.check_ready", 8, SectionField(bytes, ".text.check_ready", 8) & ~ExecInstr);
                break;
            case "sizes of .text and .text.first_fixed swapped":
                var (text, first) = (SectionField(bytes, ".text", 32), SectionField(bytes, ".text.first_fixed", 32));
                SetSectionField(bytes, ".text", 32, first);
                SetSectionField(bytes, ".text.first_fixed", 32, text);
                break;
            case "sh_addralign 0x80000000":
                SetSectionField(bytes, ".data", 48, 0x8000_0000);
                break;
            default:
                SetSymbolField(bytes, "first_fixed", 16, 8, 1UL << 63);
                break;
        }

        return bytes;
    }
}
