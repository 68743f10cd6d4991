using Iced.Intel;
using LivePatch.Elf;
using LivePatch.Live;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Links real gcc payloads at made-up addresses and proves, by decoding the linked code with Iced,
/// that every relocated instruction reaches what its relocation names.
/// </summary>
public class PayloadLinkerTests
{
    [Theory]
    [MemberData(nameof(ReplaceBuilds), MemberType = typeof(LivePayloads))]
    public void Every_relocated_instruction_reaches_its_symbol(string flags)
    {
        var linked = Link(Build("replace.c", flags), TargetSymbols());
        var elf = linked.Payload.Elf;
        var checkedRelocations = 0;
        foreach (var relocations in elf.RelocationSections)
        {
            var section = relocations.TargetSection!;
            if (!section.Flags.HasFlag(ElfSectionAttributes.ExecInstr) || !section.Flags.HasFlag(ElfSectionAttributes.Alloc))
                continue;
            var sectionAddress = linked.AddressOf(SectionSymbol(section));
            var code = Decode(linked, sectionAddress, section.Size);
            foreach (var relocation in relocations.Relocations)
            {
                var place = sectionAddress + relocation.Offset;
                var instruction = code.Single(i => i.IP <= place && place < i.NextIP);
                var expected = ExpectedAddress(linked, relocation);
                var tail = (long)(instruction.NextIP - place);
                if (relocation.Type is ElfRelocationType.Direct32 or ElfRelocationType.Direct32Signed)
                {
                    var field = BitConverter.ToUInt32(linked.Text.Bytes, (int)(place - linked.Text.Address));
                    Assert.Equal(expected + (ulong)relocation.Addend, relocation.Type == ElfRelocationType.Direct32 ? field : (ulong)(long)(int)field);
                }
                else if (instruction.FlowControl is FlowControl.Call or FlowControl.UnconditionalBranch or FlowControl.ConditionalBranch
                    && instruction.Op0Kind == OpKind.NearBranch64)
                {
                    Assert.Equal(expected + (ulong)(relocation.Addend + tail), FollowStub(linked, instruction.NearBranchTarget));
                }
                else if (PayloadLayout.IsGotRelative(relocation.Type))
                {
                    Assert.True(instruction.IsIPRelativeMemoryOperand, $"{instruction} at {section.Name}+0x{relocation.Offset:x}");
                    Assert.Equal(0, relocation.Addend + tail);
                    Assert.Equal(expected, ReadUInt64(linked, instruction.IPRelativeMemoryAddress));
                }
                else
                {
                    Assert.True(instruction.IsIPRelativeMemoryOperand, $"{instruction} at {section.Name}+0x{relocation.Offset:x}");
                    Assert.Equal(expected + (ulong)(relocation.Addend + tail), instruction.IPRelativeMemoryAddress);
                }
                checkedRelocations++;
            }
        }
        Assert.True(checkedRelocations >= 8, $"only {checkedRelocations} relocations in code");
    }

    [Theory]
    [MemberData(nameof(ReplaceBuilds), MemberType = typeof(LivePayloads))]
    public void Near_target_is_called_directly_and_far_target_through_its_stub(string flags)
    {
        var linked = Link(Build("replace.c", flags), TargetSymbols());
        var branches = AllFunctionCode(linked).Where(i => i.Op0Kind == OpKind.NearBranch64).ToList();

        Assert.Contains(branches, b => b.NearBranchTarget == Helper);
        var toStubs = branches.Where(b => linked.Text.Contains(b.NearBranchTarget) && IsStub(linked, b.NearBranchTarget)).ToList();
        Assert.Contains(toStubs, b => FollowStub(linked, b.NearBranchTarget) == FarPrintf);
        Assert.DoesNotContain(branches, b => b.NearBranchTarget == FarPrintf);
    }

    [Theory]
    [MemberData(nameof(ReplaceBuilds), MemberType = typeof(LivePayloads))]
    public void Target_global_string_literals_and_data_pointers_are_right(string flags)
    {
        var linked = Link(Build("replace.c", flags), TargetSymbols());
        var code = AllFunctionCode(linked).Where(i => i.IsIPRelativeMemoryOperand).ToList();

        // counter is reached directly (-fpie) or through a GOT slot holding its address (-fPIC).
        Assert.Contains(code, i => i.IPRelativeMemoryAddress == Counter
            || (RegionOf(linked, i.IPRelativeMemoryAddress) != null && ReadUInt64(linked, i.IPRelativeMemoryAddress) == Counter));
        // "lea string(%rip)" in position-independent code, "mov $string" in position-dependent code.
        Assert.Contains(AllFunctionCode(linked), i => (i.Mnemonic == Mnemonic.Lea ? i.IPRelativeMemoryAddress
                : i.OpCount == 2 && i.Op1Kind == OpKind.Immediate32 ? i.Immediate32 : 0) is var address
            && linked.ReadOnly.Contains(address) && ReadString(linked, address) == "fixed %d\n");

        Assert.Equal(Helper, ReadUInt64(linked, AddressOfSymbol(linked, "replace_table")));
        Assert.Equal("report %d\n", ReadString(linked, ReadUInt64(linked, AddressOfSymbol(linked, "replace_greeting"))));
        Assert.Equal(Counter, ReadUInt64(linked, AddressOfSymbol(linked, "replace_counter_pointer")));
        Assert.True(linked.Data.Contains(AddressOfSymbol(linked, "payload_common")));
        Assert.True(linked.Data.Contains(AddressOfSymbol(linked, "payload_calls")));
    }

    [Theory]
    [MemberData(nameof(ReplaceBuilds), MemberType = typeof(LivePayloads))]
    public void New_functions_keep_their_bytes_outside_relocated_fields(string flags)
    {
        var linked = Link(Build("replace.c", flags), TargetSymbols());
        var elf = linked.Payload.Elf;
        Assert.Equal(["compute_fixed", "report_fixed"], linked.Functions.Select(f => f.Function.NewSymbol).Order());
        Assert.Equal(["compute", "libdemo.so!report"], linked.Payload.Functions.Select(f => $"{f.OldModule}{(f.OldModule == null ? "" : "!")}{f.OldName}").Order());
        foreach (var function in linked.Functions)
        {
            var symbol = function.Function.Symbol;
            var section = elf.Sections[(int)symbol.SectionIndex];
            var original = elf.GetSectionData(section).Span.Slice((int)symbol.Value, (int)symbol.Size).ToArray();
            var final = linked.Text.Bytes.AsSpan((int)(function.Address - linked.Text.Address), original.Length).ToArray();
            foreach (var relocation in elf.RelocationSections.Where(r => r.TargetSection == section).SelectMany(r => r.Relocations))
            {
                var at = (int)(relocation.Offset - symbol.Value);
                if (at >= 0 && at < original.Length)
                    Array.Clear(original, at, 4);
                if (at >= 0 && at < final.Length)
                    Array.Clear(final, at, 4);
            }
            Assert.Equal(Convert.ToHexString(original), Convert.ToHexString(final));
        }
    }

    [Fact]
    public void Pc32_of_call_jcc_and_jmp_to_a_far_symbol_goes_through_its_stub()
    {
        var linked = Link(Build("pc32-call.S", ""), new Dictionary<string, ulong> { ["far_function"] = FarPrintf });
        var function = Assert.Single(linked.Functions);
        Assert.Equal("compute", function.Function.OldName);
        var branches = Decode(linked, function.Address, function.Function.Symbol.Size);
        Assert.Equal([Mnemonic.Call, Mnemonic.Je, Mnemonic.Jmp], branches.Select(b => b.Mnemonic));
        var stub = Assert.Single(branches.Select(b => b.NearBranchTarget).Distinct());
        Assert.True(IsStub(linked, stub));
        Assert.Equal(FarPrintf, FollowStub(linked, stub));
    }

    [Fact]
    public void Pc32_of_call_to_a_near_symbol_stays_direct()
    {
        var linked = Link(Build("pc32-call.S", ""), new Dictionary<string, ulong> { ["far_function"] = Helper });
        var branches = Decode(linked, linked.Functions[0].Address, linked.Functions[0].Function.Symbol.Size);
        Assert.All(branches, b => Assert.Equal(Helper, b.NearBranchTarget));
    }

    [Fact]
    public void Weak_symbol_the_target_lacks_resolves_to_zero()
    {
        var linked = Link(Build("replace.c", "-O2 -fPIC"), TargetSymbols());
        var test = AllFunctionCode(linked).First(i => i.IsIPRelativeMemoryOperand
            && RegionOf(linked, i.IPRelativeMemoryAddress) == linked.ReadOnly && ReadUInt64(linked, i.IPRelativeMemoryAddress) == 0);
        Assert.True(linked.ReadOnly.Contains(test.IPRelativeMemoryAddress));
    }

    [Fact]
    public void Layout_reserves_one_slot_per_got_symbol_and_one_stub_per_called_undefined_symbol()
    {
        var payload = Payload.Load(Build("replace.c", "-O0 -fPIC"));
        var layout = PayloadLayout.Compute(payload);
        var relocations = payload.Elf.RelocationSections
            .Where(r => r.TargetSection!.Flags.HasFlag(ElfSectionAttributes.ExecInstr))
            .SelectMany(r => r.Relocations).ToList();
        var called = relocations.Where(r => r.Type == ElfRelocationType.Plt32 && r.Symbol.SectionIndex == 0)
            .Select(r => r.SymbolName).Distinct().Order().ToArray();
        var throughGot = relocations.Where(r => PayloadLayout.IsGotRelative(r.Type)).Select(r => r.SymbolName);

        Assert.Equal(called, layout.Stubs.Keys.Select(i => payload.Elf.Symbols[i].Name).Order());
        Assert.Equal(called.Union(throughGot).Order(), layout.Slots.Keys.Select(i => payload.Elf.Symbols[i].Name).Order());
        Assert.Contains("printf", called);
        foreach (var (index, placement) in layout.Sections)
        {
            var section = payload.Elf.Sections[index];
            Assert.Equal(0UL, placement.Offset % Math.Max(section.Alignment, 1));
            Assert.True(placement.Offset + section.Size <= layout[placement.Region].Size);
            Assert.DoesNotContain(".livepatch", section.Name, StringComparison.Ordinal);
            Assert.NotEqual(".eh_frame", section.Name);
        }
        Assert.Equal(layout.Stubs.Count * PayloadLayout.StubSize, (int)(layout.Text.Size - layout.Stubs.Values.Min()));
    }

    [Fact]
    public void Absolute_32_bit_relocation_that_does_not_fit_is_refused()
    {
        var path = Build("replace.c", "-O2 -fno-pic");
        var payload = Payload.Load(path);
        var symbols = TargetSymbols();
        symbols["counter"] = 0x1_0020_0000;
        // Everything is near everything else, but the string literals lie above 4 GiB: only "mov $string, %edi" cannot fit.
        var error = Assert.Throws<PayloadException>(() => PayloadLinker.Link(
            payload, PayloadLayout.Compute(payload), 0xfff0_0000, 0x1_0000_0000, 0x1_0010_0000, name => symbols.GetValueOrDefault(name)));
        Assert.Contains("relocation R_X86_64_32 at .text.", error.Message, StringComparison.Ordinal);
        Assert.Contains("'.rodata.str1.1' (0x1000", error.Message, StringComparison.Ordinal);
        Assert.Contains("does not fit in 32 bits", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Resolver_exceptions_propagate_untouched()
    {
        var payload = Payload.Load(Build("replace.c", "-O2 -fPIC"));
        var ambiguous = new InvalidOperationException("'helper' is defined in two modules");
        var thrown = Assert.Throws<InvalidOperationException>(() => PayloadLinker.Link(
            payload, PayloadLayout.Compute(payload), TextAddress, ReadOnlyAddress, DataAddress, _ => throw ambiguous));
        Assert.Same(ambiguous, thrown);
    }

    [Fact]
    public void Misaligned_region_address_is_refused()
    {
        var payload = Payload.Load(Build("replace.c", "-O2 -fPIC"));
        Assert.Throws<ArgumentException>(() => PayloadLinker.Link(
            payload, PayloadLayout.Compute(payload), TextAddress + 1, ReadOnlyAddress, DataAddress, _ => 0));
    }

    internal static ElfSymbol SectionSymbol(ElfSection section) =>
        new() { Name = section.Name, Type = ElfSymbolType.Section, SectionIndex = (uint)section.Index };

    internal static ulong AddressOfSymbol(LinkedPayload linked, string name) =>
        linked.AddressOf(linked.Payload.Elf.FindSymbols(name).Single());

    internal static List<Instruction> Decode(LinkedPayload linked, ulong address, ulong length)
    {
        var bytes = linked.Text.Bytes.AsSpan((int)(address - linked.Text.Address), (int)length).ToArray();
        return X86.Decoded.All(bytes, address);
    }

    private static IEnumerable<Instruction> AllFunctionCode(LinkedPayload linked) =>
        linked.Functions.SelectMany(f => Decode(linked, f.Address, f.Function.Symbol.Size));

    private static ulong ExpectedAddress(LinkedPayload linked, ElfRelocation relocation)
    {
        if (relocation.Symbol.SectionIndex != ElfSymbol.UndefinedSection)
            return linked.AddressOf(relocation.Symbol);
        if (TargetSymbols().TryGetValue(relocation.SymbolName, out var address))
            return address;
        Assert.Equal(ElfSymbolBinding.Weak, relocation.Symbol.Binding);
        return 0;
    }

    private static bool IsStub(LinkedPayload linked, ulong address)
    {
        var stub = Decode(linked, address, 6)[0];
        return stub.Code == Code.Jmp_rm64 && stub.IsIPRelativeMemoryOperand;
    }

    /// <summary>Where a branch to <paramref name="target"/> ends up: through a stub's slot when it is one of our stubs.</summary>
    private static ulong FollowStub(LinkedPayload linked, ulong target)
    {
        if (!linked.Text.Contains(target) || !IsStub(linked, target))
            return target;
        var stub = Decode(linked, target, 6)[0];
        Assert.True(linked.ReadOnly.Contains(stub.IPRelativeMemoryAddress), "a stub's slot lies in the read-only region");
        return ReadUInt64(linked, stub.IPRelativeMemoryAddress);
    }
}
