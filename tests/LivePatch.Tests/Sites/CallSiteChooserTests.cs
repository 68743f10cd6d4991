using LivePatch.Elf;
using LivePatch.Sites;
using LivePatch.X86;

namespace LivePatch.Tests.Sites;

/// <summary>The default backend's choice for each call site of the fixture, decided from the file alone (<c>livepatch sites FILE</c>).</summary>
public class CallSiteChooserTests
{
    private const string LeftAlone = "slot holds lean, which may change rcx, rdx, rsi, rdi, r8, r9, r10, r11 that the site keeps: left as the indirect call";

    /// <summary>Member → reason in an executable, where the file holds every slot of the program's own functions.</summary>
    private static readonly Dictionary<string, string> InExecutable = new()
    {
        ["rdtsc"] = "slot holds native_rdtsc: native patchlet lp_native_rdtsc",
        ["identity"] = "slot holds native_identity: native patchlet lp_native_identity",
        ["add"] = "slot holds add: direct call",
        ["nothing"] = "slot holds nothing, which does nothing: NOPs",
        ["missing"] = "slot is null: ud2",
        ["lean"] = LeftAlone,
        ["seven"] = "slot holds seven: direct call",
        ["pid"] = "decided at run time: the loader fills the slot with getpid (R_X86_64_64)",
        ["twice"] = "slot holds twice: direct jmp",
    };

    [Theory]
    [InlineData("callsites-pie")]
    [InlineData("callsites-nopie")]
    public void In_an_executable_each_site_gets_the_choice_its_slot_calls_for(string sample)
    {
        var choices = CallSiteChoices(sample);

        Assert.Equal(InExecutable.Keys.Order(), choices.Keys.Order());
        foreach (var (member, reason) in InExecutable)
        {
            Assert.Equal(reason, choices[member].Reason);
            Assert.Equal(!reason.StartsWith("decided", StringComparison.Ordinal) && reason != LeftAlone, choices[member].UseReplacement);
        }
        Assert.Equal(Patchlet.Builtin.Single(p => p.Function == "native_rdtsc").Code.ToArray(), choices["rdtsc"].Replacement[..9]);
        Assert.Equal(new byte[] { 0x0f, 0x0b }, choices["missing"].Replacement[..2]);
        Assert.Equal(choices["lean"].Original, choices["lean"].Replacement);
    }

    [Fact]
    public void In_a_shared_object_interposable_functions_are_decided_at_run_time()
    {
        var choices = CallSiteChoices("callsites.so");

        // Global functions of a shared object may be interposed: the loader fills their slots by name.
        Assert.Equal("decided at run time: the loader fills the slot with native_rdtsc (R_X86_64_64)", choices["rdtsc"].Reason);
        Assert.Equal("decided at run time: the loader fills the slot with add (R_X86_64_64)", choices["add"].Reason);
        // The hidden assembly op is the library's own (a R_X86_64_RELATIVE slot), and null stays null.
        Assert.Equal("slot holds seven: direct call", choices["seven"].Reason);
        Assert.Equal("slot is null: ud2", choices["missing"].Reason);
    }

    [Fact]
    public void A_direct_call_is_placed_so_that_it_returns_to_the_end_of_the_site()
    {
        var file = ElfFile.Load(CallSiteSamples.PathOf("callsites-pie"));
        var choice = CallSiteChoices("callsites-pie")["add"];
        var add = file.Symbols.Single(s => s.Name == "add").Value;

        var decoder = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(choice.Replacement), choice.Address);
        var instructions = new List<Iced.Intel.Instruction>();
        while (decoder.IP < choice.Address + (ulong)choice.Replacement.Length)
            instructions.Add(decoder.Decode());

        Assert.All(instructions[..^1], i => Assert.Equal(Iced.Intel.Mnemonic.Nop, i.Mnemonic));
        Assert.Equal(add, instructions[^1].NearBranchTarget);
        Assert.Equal(choice.Address + SiteTables.CallSiteLength, instructions[^1].NextIP);
    }

    private static Dictionary<string, SiteChoice> CallSiteChoices(string sample) =>
        SiteChooser.Choose(ElfFile.Load(CallSiteSamples.PathOf(sample)), CpuFeatures.Detect())
            .Where(c => c.Kind == SiteKind.CallSite).ToDictionary(c => c.Name!["platform.".Length..]);
}
