using System.Globalization;
using System.Text;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Tests.Fixtures;
using static LivePatch.Tests.Payloads.LivePayloads;
using LivePatch.Payloads;

namespace LivePatch.Tests.Payloads;

/// <summary>
/// Links the same payload with GNU ld (<c>--no-relax</c>, every section pinned by a linker script at the
/// address our layout gave it) and compares: every byte must match, except GOT-relative fields, whose
/// slots must hold the same address (ld orders its GOT its own way).
/// </summary>
public class PayloadLdCrossCheckTests
{
    /// <summary>ld has no jump slots in a static link, so printf is near here.</summary>
    private static Dictionary<string, ulong> Symbols => TargetSymbols(printf: NearPrintf);

    [Theory]
    [MemberData(nameof(ReplaceBuilds), MemberType = typeof(LivePayloads))]
    public void Linked_sections_match_gnu_ld(string flags)
    {
        var path = Build("replace.c", flags);
        var payload = Payload.Load(path);
        var layout = PayloadLayout.Compute(payload);
        var ours = PayloadLinker.Link(payload, layout, TextAddress, ReadOnlyAddress, DataAddress,
            name => Symbols.TryGetValue(name, out var address) ? address : null);
        var ld = ElfFile.Load(LinkWithLd(path, payload, ours));

        var compared = 0;
        foreach (var (index, _) in layout.Sections)
        {
            var section = payload.Elf.Sections[index];
            if (section.Size == 0)
                continue;
            var address = ours.AddressOf(PayloadLinkerTests.SectionSymbol(section));
            var theirs = ld.FindSection(section.Name) ?? throw new InvalidOperationException($"ld output has no {section.Name}");
            Assert.Equal(address, theirs.Address);
            var ourBytes = Read(ours, address, (int)section.Size);
            var ldBytes = section.Type == ElfSectionType.NoBits ? new byte[section.Size] : ld.GetSectionData(theirs).ToArray();

            foreach (var relocation in payload.Elf.RelocationSections.Where(r => r.TargetSection == section).SelectMany(r => r.Relocations))
            {
                if (!PayloadLayout.IsGotRelative(relocation.Type))
                    continue;
                var at = (int)relocation.Offset;
                var place = address + relocation.Offset;
                var ourSlot = place + (ulong)(BitConverter.ToInt32(ourBytes, at) - relocation.Addend);
                if (ldBytes[at - 2] == 0xc7 && ourBytes[at - 2] == 0x8b)
                {
                    // Even with --no-relax, ld turns a GOT load of an undefined weak symbol into "mov $0, %reg".
                    Assert.Equal((ulong)(long)BitConverter.ToInt32(ldBytes, at), ReadUInt64(ours, ourSlot));
                    Array.Copy(ourBytes, at - 2, ldBytes, at - 2, 2);
                }
                else
                {
                    var ldSlot = place + (ulong)(BitConverter.ToInt32(ldBytes, at) - relocation.Addend);
                    Assert.Equal(ReadLd(ld, ldSlot), ReadUInt64(ours, ourSlot));
                }
                Array.Clear(ourBytes, at, 4);
                Array.Clear(ldBytes, at, 4);
            }
            Assert.Equal(Convert.ToHexString(ldBytes), Convert.ToHexString(ourBytes));
            compared++;
        }
        Assert.True(compared >= 5, $"only {compared} sections compared");
    }

    private static string LinkWithLd(string objectPath, Payload payload, LinkedPayload ours)
    {
        var script = new StringBuilder("SECTIONS\n{\n");
        foreach (var section in payload.Elf.Sections.Where(s => s.Size > 0 && PayloadLayout.LoadedSections(payload).Contains(s)))
        {
            var address = ours.AddressOf(PayloadLinkerTests.SectionSymbol(section));
            script.Append(CultureInfo.InvariantCulture, $"  {section.Name} 0x{address:x} : {{ *({section.Name}) }}\n");
        }
        foreach (var common in payload.Elf.Symbols.Where(s => s.SectionIndex == ElfSymbol.CommonSection))
            script.Append(CultureInfo.InvariantCulture, $"  .common.{common.Name} 0x{ours.AddressOf(common):x} : {{ *(COMMON) }}\n");
        // Past everything of ours, so its slots cannot be mistaken for our bytes.
        script.Append("  .got 0x800000 : { *(.got) *(.got.plt) }\n");
        script.Append("  /DISCARD/ : { *(.eh_frame) *(.livepatch.funcs) *(.note.*) *(.comment) }\n}\n");

        var directory = ExternalTool.ScratchDirectory("ld");
        var scriptPath = Path.Combine(directory, "payload.ld");
        var output = Path.Combine(directory, "payload.elf");
        File.WriteAllText(scriptPath, script.ToString());
        var arguments = new List<string> { "--no-relax", "-static", "-e", "0", "-T", scriptPath, "-o", output, objectPath };
        foreach (var (name, address) in Symbols)
            arguments.AddRange(["--defsym", $"{name}=0x{address:x}"]);
        ExternalTool.Run("ld", [.. arguments]);
        return output;
    }

    private static byte[] Read(LinkedPayload linked, ulong address, int length)
    {
        var region = RegionOf(linked, address) ?? throw new InvalidOperationException($"0x{address:x} is in no region");
        return region.Bytes.AsSpan((int)(address - region.Address), length).ToArray();
    }

    private static ulong ReadLd(ElfFile ld, ulong address)
    {
        var section = ld.Sections.Single(s => s.Address != 0 && address >= s.Address && address < s.Address + s.Size);
        return BitConverter.ToUInt64(ld.GetSectionData(section).Span[(int)(address - section.Address)..]);
    }
}
