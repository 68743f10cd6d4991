using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.X86;
using LivePatch.X86;

namespace LivePatch.Tests.Live;

/// <summary>
/// targets/ipara.c at -O2: check() keeps its loop counter in ecx across calls of the static scale(), which writes
/// only eax and edx (gcc -fipa-ra). The payload's scale divides, writing ecx: without a callee-save thunk the
/// callers' counter is lost and their results go wrong.
/// </summary>
[Collection(ProcessTests.Name)]
public class CallerRegistersTests
{
    private static string Fix => TestPayloads.Build("live/apply/ipa_fix.c");

    [Fact]
    public void A_new_function_calling_libc_gets_a_thunk_keeping_every_register_the_cpu_has_masks_included()
    {
        using var ipara = RunningTarget.Start("targets/ipara.c", "-O2 -g -pthread", "4");
        using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

        var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/apply/ipa_libc_fix.c")).Functions);

        Assert.NotEqual(0UL, applied.Thunk);
        var avx512 = LivePatch.X86.CpuFeatures.Detect().Has(LivePatch.X86.CpuFeature.Avx512F);
        Assert.Equal(avx512, applied.Keeps!.Contains("k0", StringComparison.Ordinal));
        var scaled = ipara.NextValue("scaled");
        Assert.True(ipara.NextValue("scaled") > scaled, "the new scale runs");
        var calls = ipara.NextValue("calls");
        Assert.True(ipara.NextValue("calls") > calls + 1000);
        Assert.Equal(0, ipara.NextValue("wrong"));

        patcher.Revert("ipa_libc_fix");
        Assert.Equal(0, ipara.NextValue("wrong"));
        Assert.False(ipara.HasExited);
    }

    [Fact]
    public void The_jump_goes_through_a_thunk_keeping_the_registers_callers_rely_on_and_the_results_stay_right()
    {
        using var ipara = RunningTarget.Start("targets/ipara.c", "-O2 -g -pthread", "4");
        var calls = ipara.NextValue("calls");
        Assert.True(ipara.NextValue("calls") > calls, "the workers run");
        using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

        var check = Assert.Single(patcher.Check(Payload.Load(Fix)), r => r.Name.EndsWith(" registers", StringComparison.Ordinal));
        var applied = Assert.Single(patcher.Apply(Fix).Functions);

        Assert.Contains("the new code may write rcx, which the old one never wrote", check.Detail, StringComparison.Ordinal);
        Assert.NotEqual(0UL, applied.Thunk);
        Assert.Equal("rcx", applied.Keeps);
        Assert.Equal(applied.Thunk, Assert.Single(patcher.List()).Functions.Single().Thunk);
        // The jump goes to the thunk; the thunk calls the new function.
        var jump = Decoded.All(applied.PatchBytes, applied.PatchAddress).Single();
        Assert.Equal(applied.Thunk, jump.NearBranchTarget);
        var scaled = ipara.NextValue("scaled");
        Assert.True(ipara.NextValue("scaled") > scaled, "the new scale runs");
        var wrong = ipara.NextValue("wrong");
        calls = ipara.NextValue("calls");
        Assert.True(ipara.NextValue("calls") > calls + 1000);
        Assert.Equal(wrong, ipara.NextValue("wrong"));
        Assert.Equal(0, wrong);

        patcher.Revert("ipa_fix");
        scaled = ipara.NextValue("scaled");
        Assert.Equal(scaled, ipara.NextValue("scaled"));
        Assert.Equal(0, ipara.NextValue("wrong"));
    }

    [Fact]
    public void An_old_function_with_a_jump_table_still_has_its_callers_registers_kept()
    {
        // scale is a dense switch: gcc -O2 jumps through a table (notrack jmp *%rdx), and still lets check() keep its
        // counter in esi and a sum in r8d across the call, which the new scale zeroes.
        using var ipara = RunningTarget.Start("targets/ipara.c", "-O2 -g -pthread -fcf-protection=full -DSWITCH", "4");
        using (var target = TargetProcess.Open(ipara.Pid))
        {
            var scale = ipara.ReadyAddress("scale");
            Assert.Contains(Decoded.All(target.ReadMemory(scale, 32), scale), i => i.FlowControl == Iced.Intel.FlowControl.IndirectBranch);
        }
        using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

        var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/apply/ipa_switch_fix.c")).Functions);

        Assert.NotEqual(0UL, applied.Thunk);
        Assert.Equal("rsi, r8", applied.Keeps);
        Assert.Equal(applied.Thunk, Decoded.All(applied.PatchBytes, applied.PatchAddress).Single().NearBranchTarget);
        var scaled = ipara.NextValue("scaled");
        Assert.True(ipara.NextValue("scaled") > scaled, "the new scale runs");
        var calls = ipara.NextValue("calls");
        Assert.True(ipara.NextValue("calls") > calls + 1000, "check() still ends its loops");
        Assert.Equal(0, ipara.NextValue("wrong"));
        patcher.Revert("ipa_switch_fix");
    }

    [Fact]
    public void In_a_stripped_program_the_function_its_debug_file_names_gets_the_thunk_its_callers_need()
    {
        var (stripped, debug, _) = Targets.DebugFileTests.Split("ipara", source: "targets/ipara.c");
        ExternalTool.Run("objcopy", $"--add-gnu-debuglink={debug}", stripped);
        using var ipara = RunningTarget.StartExecutable(stripped, "4");
        using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

        var applied = Assert.Single(patcher.Apply(Fix).Functions);

        Assert.NotEqual(0UL, applied.Thunk);
        Assert.Contains("rcx", applied.Keeps, StringComparison.Ordinal);
        var scaled = ipara.NextValue("scaled");
        Assert.True(ipara.NextValue("scaled") > scaled, "the new scale runs");
        Assert.Equal(0, ipara.NextValue("wrong"));
        patcher.Revert("ipa_fix");
    }

    [Fact]
    public void An_unnamed_function_of_a_stripped_program_is_sized_by_its_FDE_and_gets_the_thunk_its_callers_need()
    {
        var (ipara, spec) = StartStripped("ipara-unnamed", "-O2 -pthread");
        using (ipara)
        {
            using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

            var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/apply/ipa_unnamed.c", $"-O2 -DOLD=\"{spec}\"")).Functions);

            // scale writes eax and edx, the new one ecx too: no symbol, but its FDE gives its size.
            Assert.Equal(spec, applied.Name);
            Assert.Equal("rcx", applied.Keeps);
            Assert.Equal(applied.Thunk, Decoded.All(applied.PatchBytes, applied.PatchAddress).Single().NearBranchTarget);
            var calls = ipara.NextValue("calls");
            Assert.True(ipara.NextValue("calls") > calls + 1000);
            Assert.Equal(0, ipara.NextValue("wrong"));
            patcher.Revert("ipa_unnamed");
        }
    }

    [Fact]
    public void An_unnamed_function_nothing_sizes_is_refused_when_the_new_code_writes_a_register_it_may_return_in()
    {
        // Without unwind tables scale has no FDE: the old side proves nothing, so rax (its result, or a caller's value)
        // and rcx are at risk, and no thunk can keep rax without undoing the result.
        var (ipara, spec) = StartStripped("ipara-unsized", "-O2 -pthread -fno-asynchronous-unwind-tables");
        using (ipara)
        {
            using var patcher = LivePatcher.Attach(ipara.Pid, Generous.Options);

            var refused = Assert.Throws<PatchRefusedException>(() => patcher.Apply(TestPayloads.Build("live/apply/ipa_unnamed.c", $"-O2 -DOLD=\"{spec}\"")));

            Assert.Equal(LivePatchRefusal.CallerRegistersAtRisk, refused.Refusal);
            Assert.Contains($"{spec} in process {ipara.Pid} could not be read whole (no symbol or FDE gives the size", refused.Message, StringComparison.Ordinal);
            Assert.Contains("the new function writes rax", refused.Message, StringComparison.Ordinal);
            Assert.Empty(patcher.List());
            var calls = ipara.NextValue("calls");
            Assert.True(ipara.NextValue("calls") > calls);
            Assert.Equal(0, ipara.NextValue("wrong"));
        }
    }

    // ipara built with FLAGS and stripped (no debug file): scale is known only as module+0xOFFSET.
    private static (RunningTarget Target, string Spec) StartStripped(string name, string flags)
    {
        var built = RunningTarget.Build("targets/ipara.c", flags);
        var offset = ElfFile.Load(built).FindSymbols("scale")[0].Value;
        var stripped = Path.Combine(ExternalTool.ScratchDirectory(name), name);
        ExternalTool.Run("strip", "-o", stripped, built);
        return (RunningTarget.StartExecutable(stripped, "4"), $"{name}+0x{offset:x}");
    }

    [Fact]
    public void A_new_function_that_writes_nothing_more_than_the_old_one_is_jumped_to_directly()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var patcher = LivePatcher.Attach(worker.Pid, Generous.Options);

        var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/apply/loop_free.c")).Functions);

        Assert.Equal(0UL, applied.Thunk);
        Assert.Null(applied.Keeps);
        Assert.Equal(applied.NewAddress, Decoded.All(applied.PatchBytes, applied.PatchAddress).Single().NearBranchTarget);
        worker.AssertValueBecomes("compute", 5);
    }

    [Fact]
    public void Apply_and_list_say_which_function_goes_through_a_thunk_and_what_it_keeps()
    {
        using var ipara = RunningTarget.Start("targets/ipara.c", "-O2 -g -pthread", "2");
        var pid = ipara.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture);

        var applied = LivepatchCli.Run("apply", pid, Fix, "--timeout", "2000");
        var listed = LivepatchCli.Run("list", pid, "--json");

        Assert.Equal(0, applied.ExitCode);
        Assert.Matches(@"^applied ipa_fix to \d+: ipara-[0-9A-F]+!scale -> scale_divided \(through a thunk keeping rcx\);", applied.Output);
        Assert.Contains("\"keeps\": \"rcx\"", listed.Output, StringComparison.Ordinal);
        Assert.Matches("\"thunk\": [1-9][0-9]*", listed.Output);
        Assert.Equal(0, ipara.NextValue("wrong"));
    }
}
