using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>
/// Debian's stripped libc and its debug file from libc6-dbg (by build-id under <c>/usr/lib/debug/.build-id</c>): glibc
/// internal functions that <c>.dynsym</c> does not name are resolved through the debug file, checked against the other
/// names it gives their bodies, and live-patched.
/// </summary>
[Collection(ProcessTests.Name)]
public class LibcDebugFileTests
{
    [Fact]
    public void A_glibc_internal_function_named_only_by_libc6_dbg_is_patched_and_reverted()
    {
        using var program = RunningTarget.Start("targets/libc_internals.c", "-O2 -g", Array.Empty<string>());
        using (var target = TargetProcess.Open(program.Pid))
        {
            var libc = target.ModulesNamed("libc.so.6")[0];
            var debugFile = LibcDebugFile(libc);
            Assert.True(libc.IsStripped, $"{libc.Path} has a .symtab: this test wants Debian's stripped libc");
            Assert.DoesNotContain(libc.Symbols, s => s.Name == "__drand48_iterate");

            var function = target.ResolveSymbol("__drand48_iterate");

            Assert.Equal((libc.Path, true, ElfSymbolBinding.Local), (function.Module.Path, function.FromDebugFile, function.Binding));
            Assert.Equal(debugFile, libc.DebugFile);
        }
        var before = program.NextValue("random");
        using var patcher = LivePatcher.Attach(program.Pid, Generous.Options);

        var applied = Assert.Single(patcher.Apply(TestPayloads.Build("live/debug/drand48_iterate.c")).Functions);

        Assert.Equal("libc.so.6!__drand48_iterate", applied.Name);
        program.AssertValueBecomes("random", 0x12340000);
        patcher.Revert("drand48_iterate");
        program.AssertValueBecomes("random", before);
        program.AssertValueBecomes("parsed", 41);
    }

    [Fact]
    public void A_glibc_internal_function_whose_body_the_debug_file_names_twice_is_refused_unless_clones_are_allowed()
    {
        using var program = RunningTarget.Start("targets/libc_internals.c", "-O2 -g", Array.Empty<string>());
        using (var target = TargetProcess.Open(program.Pid))
            LibcDebugFile(target.ModulesNamed("libc.so.6")[0]);
        var payload = TestPayloads.Build("live/debug/strtol_internal.c");
        PatchRefusedException refused;
        using (var patcher = LivePatcher.Attach(program.Pid, Generous.Options))
            refused = Assert.Throws<PatchRefusedException>(() => patcher.Apply(payload));

        // strtoll shares strtol's body: glibc's own __GI_ names of it are the same function, not reported.
        Assert.Contains("libc.so.6!____strtol_l_internal is also named libc.so.6!____strtoll_l_internal", refused.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("__GI_", refused.Message, StringComparison.Ordinal);
        program.AssertValueBecomes("parsed", 41);
        using var allowing = LivePatcher.Attach(program.Pid, new LivePatchOptions { Timeout = Generous.Options.Timeout, AllowClones = true });
        allowing.Apply(payload);
        program.AssertValueBecomes("parsed", 4242);
        allowing.Revert("strtol_internal");
        program.AssertValueBecomes("parsed", 41);
    }

    // The running libc's debug file must be there: a missing libc6-dbg (or one of another glibc build) fails the test, saying so.
    private static string LibcDebugFile(TargetModule libc)
    {
        var id = libc.BuildId ?? throw new InvalidOperationException($"{libc.Path} has no build-id");
        var path = $"/usr/lib/debug/.build-id/{id[..2]}/{id[2..]}.debug";
        Assert.True(File.Exists(path),
            $"no debug file for the running libc ({libc.Path}, build-id {id}) at {path}: install libc6-dbg of the same version as libc6 (apt-get install libc6-dbg; .ci/run does)");
        return path;
    }
}
