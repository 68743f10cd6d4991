using LivePatch.X86;
using System.Globalization;
using LivePatch.Poke;
using LivePatch.Sites;
using LivePatch.Tests.X86;

namespace LivePatch.Tests.Sites;

/// <summary>
/// The plan step of every kind of build-time site, from data and without a process: each row of Data/site-plans.txt
/// gives a site as built, its choice and the bytes held now, and what the plan must write or refuse.
/// </summary>
public class SitePlanTests
{
    private const ulong Bias = 0x555555554000;
    private const int Pid = 42;
    private const string Module = "app";
    private const ulong Slot = 0x4000;

    public sealed record Row(string Kind, string Name, string[] Fields)
    {
        public string Expected => Fields[^1];

        public override string ToString() => $"{Kind}: {Name}";
    }

    public static TheoryData<Row> Rows()
    {
        var data = new TheoryData<Row>();
        foreach (var line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "Sites", "Data", "site-plans.txt")))
        {
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            var f = line.Split('|', StringSplitOptions.TrimEntries);
            data.Add(new Row(f[0], f[1], f[2..]));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void A_site_is_planned_as_the_table_says(Row row)
    {
        var f = row.Fields;
        Func<List<PokeSite>> plan;
        byte[] asBuilt;
        ulong site;
        switch (row.Kind)
        {
            case "alternative":
                site = Address(f[0]);
                asBuilt = Decoded.Hex(f[1]);
                var choice = new SiteChoice(SiteKind.Alternative, site, asBuilt, f[2] == "-" ? [] : Decoded.Hex(f[2]), true, "cpu has it", Address(f[3]));
                plan = () => SitePlans.Alternatives(Pid, Module, [choice], Bias, Holding(site, f[4]));
                break;
            case "static-key":
                site = Address(f[0]);
                var on = f[2] == "on";
                asBuilt = on ? [.. SiteTables.StaticKeyNop] : Decoded.Hex(f[3]);
                plan = () => SitePlans.StaticKey(Pid, Module, "key", on, [new StaticKeySite(site, Address(f[1]), "key"), new StaticKeySite(site + 0x100, Address(f[1]), "other")], Bias, Holding(site, f[3]));
                break;
            case "lock":
                site = 0x1000;
                var drop = f[0] == "drop";
                asBuilt = [drop ? SitePlans.LockPrefix : SitePlans.DroppedLockPrefix];
                plan = () => SitePlans.LockPrefixes(Pid, [new LockSite(site + Bias, $"the lock prefix at {Module}+0x{site:x}")], drop, Holding(site, f[1]));
                break;
            case "callsite":
                site = 0x1000;
                asBuilt = Decoded.Hex(f[0]);
                var callSite = new CallSite(site, asBuilt.Length, Slot, "ops.op", GeneralRegisters.CallerSaved, 0, false);
                ulong? slotValue = f[2] == "-" ? null : Address(f[2]);
                var decision = new CallSiteDecision(callSite, site + Bias, asBuilt, Decoded.Hex(f[1]), "as the table says", slotValue);
                plan = () =>
                {
                    var planned = SitePlans.CallSites(Pid, Module, [decision], Bias, Holding(site, f[3]));
                    // A poke carries the slot value its choice assumed, at the slot's run-time address.
                    Assert.Equal(planned.Pokes.Count == 0 || slotValue is null ? [] : [new SlotExpectation(Slot + Bias, slotValue.Value, planned.Pokes[0].Description)], planned.Slots);
                    return planned.Pokes;
                };
                break;
            case "restore-callsite":
                site = 0x1000;
                var built = Decoded.Hex(f[0]);
                asBuilt = Decoded.Hex(f[1]);
                plan = () => SitePlans.RestoreCallSites(Pid, Module, [new CallSite(site, built.Length, Slot, "ops.op", GeneralRegisters.CallerSaved, 0, false)], Bias, _ => built, Holding(site, f[1])).Pokes;
                break;
            default:
                throw new InvalidDataException($"unknown kind '{row.Kind}' in site-plans.txt");
        }

        if (row.Expected.StartsWith("refuse ", StringComparison.Ordinal))
        {
            var colon = row.Expected.IndexOf(':', StringComparison.Ordinal);
            var error = Assert.Throws<SiteRefusedException>(() => plan());
            Assert.Equal(Enum.Parse<SiteRefusal>(row.Expected[7..colon]), error.Refusal);
            Assert.Contains(row.Expected[(colon + 2)..], error.Message, StringComparison.Ordinal);
            return;
        }
        var pokes = plan();
        if (row.Expected == "skip")
        {
            Assert.Empty(pokes);
            return;
        }
        var poke = Assert.Single(pokes);
        Assert.Equal(site + Bias, poke.Address);
        Assert.Equal(Decoded.ToHex(asBuilt), Decoded.ToHex(poke.Expected));
        Assert.Equal(Decoded.ToHex(Decoded.Hex(row.Expected["poke ".Length..])), Decoded.ToHex(poke.Replacement));
        Assert.True(poke.GuardLength >= poke.Replacement.Length);
    }

    // The process holds `hex` at the site's run-time address (and nothing anywhere else).
    private static CurrentBytes Holding(ulong site, string hex)
    {
        var bytes = Decoded.Hex(hex);
        return (address, count) =>
        {
            Assert.Equal(site + Bias, address);
            Assert.Equal(bytes.Length, count);
            return bytes;
        };
    }

    private static ulong Address(string text) => ulong.Parse(text.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
}
