using Iced.Intel;
using LivePatch.Live;
using LivePatch.Sites;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Sites;
using LivePatch.X86;
using static Iced.Intel.AssemblerRegisters;

namespace LivePatch.Tests.Sites;

/// <summary>Call sites of callsites_target.c rewritten in the running process by each backend (the table of cases is in the fixture).</summary>
[Collection(ProcessTests.Name)]
public class CallSiteTests
{
    [Fact]
    public void The_default_backend_inlines_patchlets_calls_directly_nops_and_traps_in_one_stop()
    {
        using var target = StartTarget();
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        using var code = new SiteCode(target.Pid);

        var report = patcher.ApplyCallSites();

        Assert.Equal((9, 7, 7, 3), (report.Sites, report.Changed, report.Written, report.ThreadsStopped));
        Assert.Equal(Builtin("native_rdtsc"), code.Now("rdtsc")[..9]);
        Assert.Equal(Builtin("native_identity"), code.Now("identity")[..3]);
        Assert.All(code.Instructions("rdtsc").Skip(3).Concat(code.Instructions("identity").Skip(1)), i => Assert.Equal(Mnemonic.Nop, i.Mnemonic));
        code.AssertEndsWithCallTo("add", "add");
        code.AssertEndsWithCallTo("seven", "seven");  // an assembly op that declared it changes only rax, at a site that keeps the rest
        Assert.All(code.Instructions("nothing"), i => Assert.Equal(Mnemonic.Nop, i.Mnemonic));
        Assert.Equal(Code.Ud2, code.Instructions("missing")[0].Code);
        Assert.Equal(code.Original("lean"), code.Now("lean"));  // a C function may change registers the site keeps
        Assert.Equal(code.Original("pid"), code.Now("pid"));    // getpid in libc is beyond rel32 reach of the PIE
        var jump = code.Instructions("twice")[0];
        Assert.Equal((Code.Jmp_rel32_64, code.Function("twice")), (jump.Code, jump.NearBranchTarget));
        Assert.Contains(report.Choices, c => c.Name == "platform.rdtsc" && c.Reason == "slot holds native_rdtsc: native patchlet lp_native_rdtsc");
        AssertProgramRight(target);

        Assert.Equal(0, patcher.ApplyCallSites().Written);
    }

    [Fact]
    public void Restoring_puts_every_indirect_call_back_and_a_changed_choice_needs_it()
    {
        using var target = StartTarget();
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        using var code = new SiteCode(target.Pid);

        var direct = patcher.ApplyCallSites(CallSiteBackend.Direct);

        Assert.Equal(7, direct.Written);
        code.AssertEndsWithCallTo("rdtsc", "native_rdtsc");
        code.AssertEndsWithCallTo("identity", "native_identity");
        AssertProgramRight(target);
        var error = Assert.Throws<SiteRefusedException>(() => patcher.ApplyCallSites());
        Assert.Equal(SiteRefusal.UnexpectedBytes, error.Refusal);
        Assert.Contains("call site 'platform.rdtsc'", error.Message, StringComparison.Ordinal);
        Assert.Contains("restore the call sites first", error.Message, StringComparison.Ordinal);

        var restored = patcher.RestoreCallSites();

        Assert.Equal(7, restored.Written);
        Assert.All(CallSiteSamples.Members, m => Assert.Equal(code.Original(m), code.Now(m)));
        AssertProgramRight(target);
        Assert.Equal(0, patcher.RestoreCallSites().Written);
        Assert.Equal(7, patcher.ApplyCallSites().Written);
        Assert.Equal(Builtin("native_rdtsc"), code.Now("rdtsc")[..9]);
    }

    [Fact]
    public void A_custom_backend_rewrites_its_own_sites_and_falls_back_to_the_direct_one()
    {
        using var target = StartTarget();
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        using var code = new SiteCode(target.Pid);
        var backend = new PlusOneBackend();

        var report = patcher.ApplyCallSites(backend);

        Assert.Equal(CallSiteSamples.Members.Select(m => $"platform.{m}").Order(), backend.Seen.Order());
        Assert.Equal(PlusOneBackend.PlusOne.Code.ToArray(), code.Now("identity")[..PlusOneBackend.PlusOne.Code.Length]);
        code.AssertEndsWithCallTo("rdtsc", "native_rdtsc"); // the direct backend's choice: no patchlets there
        Assert.Equal("plus one, inlined", report.Choices.Single(c => c.Name == "platform.identity").Reason);
        Assert.Equal("slot holds native_rdtsc: direct call", report.Choices.Single(c => c.Name == "platform.rdtsc").Reason);
        target.AssertValueBecomes("identity", 43);
        target.AssertValueBecomes("add", 5);
    }

    [Fact]
    public void A_backend_that_leaves_a_return_address_inside_a_site_is_refused_and_nothing_is_written()
    {
        using var target = StartTarget();
        using var patcher = SitePatcher.Attach(target.Pid, Generous.Sites);
        using var code = new SiteCode(target.Pid);

        var error = Assert.Throws<InvalidOperationException>(() => patcher.ApplyCallSites(new CallFirstBackend()));

        Assert.Contains("a call must end at the end of the site", error.Message, StringComparison.Ordinal);
        Assert.All(CallSiteSamples.Members, m => Assert.Equal(code.Original(m), code.Now(m)));
        AssertProgramRight(target);
    }

    [Fact]
    public void A_slot_that_changes_before_the_write_is_caught_inside_the_stop_and_nothing_is_written()
    {
        using var target = StartTarget("churn");
        using var reader = TargetProcess.Open(target.Pid);
        // platform.missing, the slot the churning thread rewrites (the fifth pointer of the ops table).
        var slot = reader.ResolveSymbol("platform").Address + 4 * 8;
        // Between the plan and the stop, wait until the slot changed: on a loaded machine the churning thread may
        // otherwise get no CPU in that window, and the write would rightly go ahead.
        var options = new SitePatcherOptions
        {
            Timeout = Generous.Timeout,
            Checkpoint = step =>
            {
                if (step != "planned")
                    return;
                var planned = reader.ReadMemory(slot, 8);
                var waited = System.Diagnostics.Stopwatch.StartNew();
                while (reader.ReadMemory(slot, 8).AsSpan().SequenceEqual(planned) && waited.Elapsed < TimeSpan.FromSeconds(30))
                    Thread.Yield();
            },
        };
        using var patcher = SitePatcher.Attach(target.Pid, options);
        using var code = new SiteCode(target.Pid);

        var error = Assert.Throws<SiteRefusedException>(() => patcher.ApplyCallSites());

        Assert.Equal(SiteRefusal.CallSiteSlotChanged, error.Refusal);
        Assert.Contains("the slot of call site 'platform.missing'", error.Message, StringComparison.Ordinal);
        Assert.Contains("nothing was written", error.Message, StringComparison.Ordinal);
        Assert.All(CallSiteSamples.Members, m => Assert.Equal(code.Original(m), code.Now(m)));
        AssertProgramRight(target);
    }

    private static RunningTarget StartTarget(params string[] arguments)
    {
        var target = RunningTarget.Start(CallSiteSamples.Source, CallSiteSamples.TargetFlags(), arguments);
        try
        {
            target.AssertValueBecomes("identity", 42);
            return target;
        }
        catch
        {
            target.Dispose();
            throw;
        }
    }

    private static void AssertProgramRight(RunningTarget target)
    {
        target.AssertValueBecomes("identity", 42);
        target.AssertValueBecomes("add", 5);
        target.AssertValueBecomes("lean", 11);
        target.AssertValueBecomes("seven", 7);
        target.AssertValueBecomes("pid_ok", 1);
        target.AssertValueBecomes("twice", 42);
        target.AssertValueBecomes("tsc_ok", 1);
        var loops = target.NextValue("loops");
        Assert.True(target.NextValue("loops") > loops, "the workers keep running");
    }

    private static byte[] Builtin(string function) => Patchlet.Builtin.Single(p => p.Function == function).Code.ToArray();

    /// <summary>Inlines <c>platform.identity</c> as <c>lea 1(%rdi), %rax</c> (visible: 43 for 42) and hands every other site to the direct backend.</summary>
    private sealed class PlusOneBackend : CallSiteBackend
    {
        public static readonly Patchlet PlusOne = Patchlet.Assemble("plus_one", a => a.lea(rax, __[rdi + 1]), GeneralRegisters.Rax);

        public List<string> Seen { get; } = [];

        public override int Patch(CallSitePatch site, PatchBuffer buffer)
        {
            Seen.Add(site.Name);
            if (site.Name != "platform.identity" || (PlusOne.Clobbers & ~site.Clobbers) != 0)
                return Direct.Patch(site, buffer);
            buffer.Write(PlusOne.Code.Span);
            site.Reason = "plus one, inlined";
            return buffer.Length;
        }
    }

    /// <summary>Writes the direct call at the start of the site: threads in the callee would return into the middle of it.</summary>
    private sealed class CallFirstBackend : CallSiteBackend
    {
        public override int Patch(CallSitePatch site, PatchBuffer buffer)
        {
            if (site.IsNull || site.IsTail)
                return Unchanged;
            buffer.WriteCall(site.Function);
            return buffer.Length;
        }
    }

    /// <summary>The fixture's call sites in the running process: as built, as they are now, and the functions they call.</summary>
    private sealed class SiteCode : IDisposable
    {
        private readonly TargetProcess _process;
        private readonly TargetModule _module;
        private readonly Dictionary<string, CallSite> _sites;

        public SiteCode(int pid)
        {
            _process = TargetProcess.Open(pid);
            _module = _process.MainModule;
            _sites = SiteTables.Read(_module.Elf).CallSites.ToDictionary(s => s.Name["platform.".Length..]);
        }

        public byte[] Now(string member) => _process.ReadMemory(_sites[member].Address + _module.LoadBias, _sites[member].Length);

        public byte[] Original(string member)
        {
            var site = _sites[member];
            var segment = _module.Elf.LoadSegments.Single(s => site.Address >= s.VirtualAddress && site.Address < s.VirtualAddress + s.FileSize);
            return _module.Elf.GetSegmentData(segment).Slice((int)(site.Address - segment.VirtualAddress), site.Length).ToArray();
        }

        public ulong Function(string name) => _module.Symbols.First(s => s.Name == name && s.IsFunction).Address;

        public List<Instruction> Instructions(string member)
        {
            var address = _sites[member].Address + _module.LoadBias;
            var bytes = Now(member);
            var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes), address);
            var instructions = new List<Instruction>();
            while (decoder.IP < address + (ulong)bytes.Length)
                instructions.Add(decoder.Decode());
            return instructions;
        }

        /// <summary>NOPs, then <c>call rel32</c> to <paramref name="function"/> ending exactly at the end of the site.</summary>
        public void AssertEndsWithCallTo(string member, string function)
        {
            var instructions = Instructions(member);
            Assert.All(instructions[..^1], i => Assert.Equal(Mnemonic.Nop, i.Mnemonic));
            Assert.Equal((Code.Call_rel32_64, Function(function)), (instructions[^1].Code, instructions[^1].NearBranchTarget));
            Assert.Equal(_sites[member].Address + _module.LoadBias + (ulong)_sites[member].Length, instructions[^1].NextIP);
        }

        public void Dispose() => _process.Dispose();
    }
}
