using System.Buffers.Binary;
using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using LivePatch.Elf;

namespace LivePatch.Tests.Elf;

/// <summary>
/// Property: however a real file is truncated, flipped or has header fields overwritten with
/// extreme values, parsing either succeeds with every accessor safe, or throws
/// <see cref="ElfFormatException"/>; nothing else escapes and nothing hangs.
/// </summary>
public class ElfMutationPropertyTests
{
    /// <summary>Cases per sample; three samples make 10,500 in all.</summary>
    private const int CasesPerSample = 3500;

    private static readonly TimeSpan RunLimit = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(2);

    /// <summary>One mutation, drawn by FsCheck: a kind and raw numbers that <see cref="Apply"/> interprets.</summary>
    public readonly record struct Mutation(int Kind, int First, int Second, int Seed);

    /// <summary>Where a field lies in the file and how many bytes wide it is.</summary>
    private readonly record struct Field(int Offset, int Width);

    public static TheoryData<string> Samples => ["sample-O2.o", "sample-nopie", "ls"];

    [Theory]
    [MemberData(nameof(Samples))]
    public async Task Mutated_files_parse_or_throw_ElfFormatException_only(string sample)
    {
        var original = ElfSamples.BytesOf(sample);
        var fields = FieldsOf(original, ElfFile.Parse((byte[])original.Clone()));
        var mutations =
            from kind in Gen.Choose(0, 3)
            from first in Gen.Choose(0, int.MaxValue)
            from second in Gen.Choose(0, int.MaxValue)
            from seed in Gen.Choose(0, int.MaxValue)
            select new Mutation(kind, first, second, seed);
        var accepted = 0;
        var rejected = 0;
        var property = Prop.ForAll(Arb.From(mutations), mutation =>
        {
            var bytes = Apply(original, fields, mutation);
            var clock = Stopwatch.StartNew();
            try
            {
                TouchEverything(ElfFile.Parse(bytes));
                accepted++;
            }
            catch (ElfFormatException error) when (error.Offset >= 0 && error.Offset <= original.Length)
            {
                rejected++;
            }

            if (clock.Elapsed > CaseLimit)
            {
                throw new TimeoutException($"{mutation} took {clock.Elapsed}");
            }
        });

        var run = Task.Run(() => Check.One(Config.QuickThrowOnFailure.WithMaxTest(CasesPerSample).WithQuietOnSuccess(true), property));

        var finished = await Task.WhenAny(run, Task.Delay(RunLimit)) == run;
        Assert.True(finished, $"the property run on {sample} did not finish within {RunLimit}: a parse hangs");
        await run;
        Assert.Equal(CasesPerSample, accepted + rejected);
        Assert.True(rejected > CasesPerSample / 10, $"only {rejected} of {CasesPerSample} mutations were rejected");
    }

    private static ReadOnlyMemory<byte> Apply(byte[] original, Field[] fields, Mutation mutation)
    {
        var random = new Random(mutation.Seed);
        var bytes = (byte[])original.Clone();
        switch (mutation.Kind)
        {
            case 0:
                return bytes.AsMemory(0, mutation.First % bytes.Length);
            case 1:
                Flip(bytes, fields, 1 + (mutation.First % 16), random);
                return bytes;
            case 2:
                Overwrite(bytes, fields[mutation.First % fields.Length], mutation.Second, random);
                return bytes;
            default:
                Overwrite(bytes, fields[mutation.First % fields.Length], mutation.Second, random);
                Overwrite(bytes, fields[random.Next(fields.Length)], random.Next(), random);
                return mutation.Second % 2 == 0 ? bytes.AsMemory(0, random.Next(bytes.Length)) : bytes;
        }
    }

    /// <summary>Flips bytes, half of them inside the structures the reader decodes.</summary>
    private static void Flip(byte[] bytes, Field[] fields, int count, Random random)
    {
        for (var i = 0; i < count; i++)
        {
            var field = fields[random.Next(fields.Length)];
            var at = random.Next(2) == 0 ? field.Offset + random.Next(field.Width) : random.Next(bytes.Length);
            bytes[at] ^= (byte)random.Next(1, 256);
        }
    }

    private static void Overwrite(byte[] bytes, Field field, int choice, Random random)
    {
        ulong[] extremes =
        [
            0, 1, 2, 3, 24, 56, 64, 0xff00, 0xfff1, 0xfff2, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff,
            (ulong)bytes.Length, (ulong)bytes.Length - 1, (ulong)bytes.Length + 1, (ulong)bytes.Length / 2,
            long.MaxValue, 1UL << 63, ulong.MaxValue, ulong.MaxValue - 1, ulong.MaxValue - 23, (ulong)random.NextInt64(),
        ];
        var value = extremes[choice % extremes.Length];
        var span = bytes.AsSpan(field.Offset, field.Width);
        switch (field.Width)
        {
            case 1: span[0] = (byte)value; break;
            case 2: BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)value); break;
            case 4: BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)value); break;
            default: BinaryPrimitives.WriteUInt64LittleEndian(span, value); break;
        }
    }

    /// <summary>Every header field, every section and program header field, and the first entries of each table.</summary>
    private static Field[] FieldsOf(byte[] bytes, ElfFile elf)
    {
        var fields = new List<Field>
        {
            new(4, 1), new(5, 1), new(6, 1), new(16, 2), new(18, 2), new(20, 4), new(24, 8), new(32, 8), new(40, 8),
            new(52, 2), new(54, 2), new(56, 2), new(58, 2), new(60, 2), new(62, 2),
        };
        var sectionTable = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(40));
        foreach (var section in elf.Sections)
        {
            var at = sectionTable + (section.Index * 64);
            fields.AddRange([new(at, 4), new(at + 4, 4), new(at + 8, 8), new(at + 16, 8), new(at + 24, 8),
                new(at + 32, 8), new(at + 40, 4), new(at + 44, 4), new(at + 48, 8), new(at + 56, 8)]);
            var entries = (int)Math.Min(section.Size / 24, 64);
            var start = (int)section.Offset;
            if (section.Type is ElfSectionType.SymbolTable or ElfSectionType.DynamicSymbolTable)
            {
                for (var i = 0; i < entries; i++)
                {
                    var entry = start + (i * 24);
                    fields.AddRange([new(entry, 4), new(entry + 4, 1), new(entry + 5, 1), new(entry + 6, 2), new(entry + 8, 8), new(entry + 16, 8)]);
                }
            }
            else if (section.Type == ElfSectionType.Rela)
            {
                for (var i = 0; i < entries; i++)
                {
                    var entry = start + (i * 24);
                    fields.AddRange([new(entry, 8), new(entry + 8, 4), new(entry + 12, 4), new(entry + 16, 8)]);
                }
            }
            else if (section.Type == ElfSectionType.Note && section.Size >= 12)
            {
                fields.AddRange([new(start, 4), new(start + 4, 4), new(start + 8, 4)]);
            }
        }

        var programTable = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(32));
        foreach (var segment in elf.Segments)
        {
            var at = programTable + (segment.Index * 56);
            fields.AddRange([new(at, 4), new(at + 4, 4), new(at + 8, 8), new(at + 16, 8), new(at + 24, 8),
                new(at + 32, 8), new(at + 40, 8), new(at + 48, 8)]);
        }

        return [.. fields];
    }

    /// <summary>Reads every value a successful parse exposes, to prove nothing was left to fail later.</summary>
    private static void TouchEverything(ElfFile elf)
    {
        var sum = (long)elf.Entry + (long)elf.Type + (long)elf.Machine + (elf.BuildId?.Length ?? 0);
        foreach (var section in elf.Sections)
        {
            sum += section.Name.Length + elf.GetSectionData(section).Span.Length;
            if (section.Type is ElfSectionType.SymbolTable or ElfSectionType.DynamicSymbolTable)
            {
                sum += elf.GetSymbols(section).Count;
            }

            if (section.Type == ElfSectionType.StringTable && section.Size > 0)
            {
                sum += elf.ReadString(section, 0).Length;
            }

            sum += elf.FindSection(section.Name)!.Index;
        }

        foreach (var segment in elf.Segments.Concat(elf.LoadSegments))
        {
            sum += elf.GetSegmentData(segment).Span.Length;
        }

        foreach (var symbol in elf.Symbols.Concat(elf.DynamicSymbols))
        {
            sum += symbol.Name.Length + (long)symbol.SectionIndex;
            if (symbol.Name.Length > 0)
            {
                sum += elf.FindSymbols(symbol.Name).Count;
            }
        }

        foreach (var relocations in elf.RelocationSections)
        {
            sum += relocations.Section.Index + (relocations.TargetSection?.Index ?? 0) + (relocations.SymbolTable?.Index ?? 0);
            foreach (var relocation in relocations.Relocations)
            {
                sum += relocation.SymbolName.Length + relocation.TypeName.Length + relocation.Symbol.Name.Length;
            }
        }

        foreach (var note in elf.Notes)
        {
            sum += note.Name.Length + note.Descriptor.Span.Length;
        }

        Assert.NotEqual(long.MinValue, sum);
    }
}
