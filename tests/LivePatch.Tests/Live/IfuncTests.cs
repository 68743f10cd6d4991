using System.Buffers.Binary;
using System.Globalization;
using System.Text.RegularExpressions;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// GNU indirect functions (IFUNC) of glibc in a running -O2 PIE (tests/fixtures/live/ifunc/strings.c): a payload's
/// calls to strlen and memcpy reach the implementations the process uses; replacing strlen patches the implementation
/// its slots hold; what the process never resolved, slots that disagree and an implementation shared by memcpy and
/// memmove are refused in one line, leaving the target as it was.
/// </summary>
[Collection(ProcessTests.Name)]
public class IfuncTests
{
    private const string Flags = "-O2 -g -fpie -pie -fcf-protection=full";
    private const int TextLength = 21;

    private static string Build(string name) => TestPayloads.Build($"live/ifunc/{name}.c", "-O2 -fno-builtin");

    private static RunningTarget Start() => RunningTarget.Start("live/ifunc/strings.c", Flags);

    [Fact]
    public void A_payload_calling_strlen_and_memcpy_gets_the_implementations_the_process_uses()
    {
        using var target = Start();
        target.AssertValueBecomes("measure", TextLength);

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var check = patcher.Check(LivePatch.Payloads.Payload.Load(Build("measure_fix")));
        Assert.Contains(check, c => c.Name == "symbol strlen" && c.Detail.StartsWith("libc.so.6!strlen is a GNU indirect function: linked to ", StringComparison.Ordinal));
        Assert.Contains(check, c => c.Name == "symbol memcpy" && c.Detail.Contains("resolved slot(s) hold it", StringComparison.Ordinal));
        patcher.Apply(Build("measure_fix"));

        // The copy made by memcpy, measured by strlen, plus 1000: the resolvers would have given addresses.
        target.AssertValueBecomes("measure", 1000 + TextLength);
        patcher.Revert("measure_fix");
        target.AssertValueBecomes("measure", TextLength);
    }

    [Fact]
    public void Replacing_strlen_patches_the_implementation_the_process_calls_and_revert_restores_it()
    {
        using var target = Start();
        target.AssertValueBecomes("strlen_calls", 0);
        var slot = GotSlot(target.Pid, "strlen");
        using var process = TargetProcess.Open(target.Pid);
        var implementation = BinaryPrimitives.ReadUInt64LittleEndian(process.ReadMemory(slot, 8));

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var check = patcher.Check(LivePatch.Payloads.Payload.Load(Build("counted_strlen")));
        var planned = Assert.Single(check, c => c.Name.StartsWith("libc.so.6!strlen (ifunc: ", StringComparison.Ordinal) && c.Name.EndsWith(')'));
        Assert.Contains("through the GNU indirect function libc.so.6!strlen", planned.Detail, StringComparison.Ordinal);
        var applied = patcher.Apply(Build("counted_strlen"));

        var function = Assert.Single(applied.Functions);
        Assert.Equal(implementation, function.OldAddress);
        Assert.Equal("libc.so.6!strlen", function.Ifunc);
        Assert.Matches(@"^libc\.so\.6!strlen \(ifunc: [^)]+\)$", function.Name);
        Assert.Equal(function.Name, Assert.Single(Assert.Single(LivePatcher.List(target.Pid)).Functions).Name);
        // The program's strlen calls (and libc's own) now run the payload, which counts them; the results stay right.
        target.WaitForLine(l => Regex.IsMatch(l, @"\bstrlen_calls=[1-9]"), TimeSpan.FromSeconds(5));
        var counted = target.NextValue("strlen_calls");
        Assert.True(target.NextValue("strlen_calls") > counted, "strlen calls go through the payload");
        target.AssertValueBecomes("measure", TextLength);

        patcher.Revert("counted_strlen");
        var after = target.NextValue("strlen_calls");
        target.AssertValueBecomes("strlen_calls", after);
        Assert.Equal(Convert.ToHexString(FileBytes(process, implementation)), Convert.ToHexString(process.ReadMemory(implementation, 16)));
        target.AssertValueBecomes("measure", TextLength);
    }

    [Fact]
    public void A_loaded_strlen_replacement_applies_by_name_under_stack_consistency_and_replace_takes_it_back()
    {
        using var target = Start();
        using var process = TargetProcess.Open(target.Pid);
        var implementation = BinaryPrimitives.ReadUInt64LittleEndian(process.ReadMemory(GotSlot(target.Pid, "strlen"), 8));

        using var patcher = LivePatcher.Attach(target.Pid, new LivePatchOptions { Timeout = Generous.Timeout, Consistency = ConsistencyModel.Stack });
        patcher.Load(Build("counted_strlen"));
        patcher.ApplyLoaded("counted_strlen");
        target.WaitForLine(l => Regex.IsMatch(l, @"\bstrlen_calls=[1-9]"), TimeSpan.FromSeconds(5));

        // Replace reverts the strlen implementation to its file's code and applies the measure fix, in one stop.
        var replaced = patcher.Replace(LivePatch.Payloads.Payload.Load(Build("measure_fix")));

        Assert.Equal(["counted_strlen"], replaced.Reverted);
        target.AssertValueBecomes("measure", 1000 + TextLength);
        target.AssertValueBecomes("strlen_calls", target.NextValue("strlen_calls"));
        Assert.Equal(Convert.ToHexString(FileBytes(process, implementation)), Convert.ToHexString(process.ReadMemory(implementation, 16)));
    }

    [Fact]
    public void A_payload_calling_an_ifunc_the_process_never_resolved_is_refused_in_one_line()
    {
        using var target = Start();
        var before = TargetSnapshot.Take(target.Pid, target.ReadyAddress("measure"));

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("uses_strstr")));

        Assert.Equal(LivePatchRefusal.IndirectFunction, error.Refusal);
        Assert.StartsWith("symbol 'strstr' used by the payload is libc.so.6!strstr, a GNU indirect function (IFUNC) that process ", error.Message, StringComparison.Ordinal);
        Assert.Contains("has not resolved yet", error.Message, StringComparison.Ordinal);
        Assert.Contains("JUMP_SLOT slot 0x", error.Message, StringComparison.Ordinal);
        Assert.Contains("lazy binding, not called yet", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", error.Message, StringComparison.Ordinal);
        Assert.Equal(LivePatchRefusal.IndirectFunction, Assert.Throws<PatchRefusedException>(() => patcher.Check(LivePatch.Payloads.Payload.Load(Build("uses_strstr")))).Refusal);
        Assert.Empty(patcher.List());
        before.AssertUnchanged();
        target.AssertValueBecomes("measure", TextLength);
    }

    [Fact]
    public void Replacing_an_ifunc_the_process_never_resolved_is_refused()
    {
        using var target = Start();
        var before = TargetSnapshot.Take(target.Pid, target.ReadyAddress("measure"));

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("replace_strstr")));

        Assert.Equal(LivePatchRefusal.IndirectFunction, error.Refusal);
        Assert.StartsWith("'strstr' to replace is libc.so.6!strstr, a GNU indirect function (IFUNC) that process ", error.Message, StringComparison.Ordinal);
        Assert.Contains("livepatch never runs a resolver in the target", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
    }

    [Fact]
    public void Replacing_memcpy_is_refused_because_memmove_resolves_to_the_same_implementation()
    {
        using var target = Start();
        var before = TargetSnapshot.Take(target.Pid, target.ReadyAddress("measure"));

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("replace_memcpy")));

        Assert.Equal(LivePatchRefusal.IndirectFunction, error.Refusal);
        Assert.StartsWith("'memcpy' to replace is libc.so.6!memcpy, a GNU indirect function (IFUNC); its implementation in process ", error.Message, StringComparison.Ordinal);
        Assert.Contains("libc.so.6!memmove", error.Message, StringComparison.Ordinal);
        Assert.Contains("a jump at its entry would replace", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        target.AssertValueBecomes("measure", TextLength);
    }

    [Fact]
    public void Slots_that_disagree_are_refused_naming_both()
    {
        using var target = Start();
        target.AssertValueBecomes("measure", TextLength);
        // Another tool's hook: the program's GOT slot for strlen now calls the program's own plain_strlen; libc's own
        // IRELATIVE slot still holds glibc's implementation.
        var plain = target.ReadyAddress("plain_strlen");
        var slot = GotSlot(target.Pid, "strlen");
        using (var process = TargetProcess.Open(target.Pid))
            process.WriteMemory(slot, BitConverter.GetBytes(plain));
        var before = TargetSnapshot.Take(target.Pid, target.ReadyAddress("measure"));

        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);
        var error = Assert.Throws<PatchRefusedException>(() => patcher.Apply(Build("counted_strlen")));

        Assert.Equal(LivePatchRefusal.IndirectFunction, error.Refusal);
        Assert.Contains("whose slots in process ", error.Message, StringComparison.Ordinal);
        Assert.Contains($"JUMP_SLOT slot 0x{slot:x} holds 0x{plain:x} (plain_strlen)", error.Message, StringComparison.Ordinal);
        Assert.Contains("libc.so.6's IRELATIVE slot 0x", error.Message, StringComparison.Ordinal);
        Assert.Contains("refusing to choose", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("\n", error.Message, StringComparison.Ordinal);
        before.AssertUnchanged();
        target.AssertValueBecomes("measure", TextLength);
    }

    // The address of the program's GOT slot for name (its JUMP_SLOT relocation), from its file and its load address.
    private static ulong GotSlot(int pid, string name)
    {
        var executable = File.ResolveLinkTarget($"/proc/{pid}/exe", returnFinalTarget: true)!.FullName;
        var elf = ElfFile.Load(executable);
        var relocation = elf.RelocationSections.SelectMany(s => s.Relocations).Single(r => r.Type == ElfRelocationType.JumpSlot && r.SymbolName == name);
        var first = File.ReadLines($"/proc/{pid}/maps").First(l => l.EndsWith(executable, StringComparison.Ordinal));
        var start = ulong.Parse(first[..first.IndexOf('-')], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return start + relocation.Offset;
    }

    // What libc's file holds at an address of the process: the code a revert must have put back.
    private static byte[] FileBytes(TargetProcess process, ulong address)
    {
        var libc = process.Modules.Single(m => m.Name == "libc.so.6");
        return libc.Elf.ReadLoaded(address - libc.LoadBias, 16).ToArray();
    }
}
