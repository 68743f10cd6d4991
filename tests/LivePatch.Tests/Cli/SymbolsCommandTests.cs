using System.Globalization;
using System.Text.Json;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Cli;

/// <summary><c>livepatch symbols PID [PATTERN]</c>: how a user finds what to name in a payload.</summary>
[Collection(ProcessTests.Name)]
public class SymbolsCommandTests
{
    [Fact]
    public void Functions_are_listed_with_what_a_payload_needs_to_know()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        var pid = worker.Pid.ToString(CultureInfo.InvariantCulture);

        var compute = LivepatchCli.Run("symbols", pid, "comp*");
        var tiny = LivepatchCli.Run("symbols", pid, "tiny");
        var strlen = JsonDocument.Parse(LivepatchCli.Run("symbols", pid, "libc!strlen", "--json").Output).RootElement;
        var none = LivepatchCli.Run("symbols", pid, "no_such_*");

        Assert.Equal(0, compute.ExitCode);
        Assert.Matches($@"worker-[0-9A-F]+!compute\s*│\s*0x{worker.ReadyAddress("compute"):x}\s*│", compute.Output);
        Assert.Contains("too short to patch: 7 bytes (4 of them endbr64)", tiny.Output, StringComparison.Ordinal);
        var row = Assert.Single(strlen.EnumerateArray(), r => !r.GetProperty("oldVersion").GetBoolean());
        Assert.True(row.GetProperty("ifunc").GetBoolean());
        Assert.Equal("libc.so.6!strlen", row.GetProperty("spec").GetString());
        Assert.Equal(".dynsym", row.GetProperty("table").GetString());
        Assert.Contains("has no function matching 'no_such_*'", none.Output, StringComparison.Ordinal);
    }
}
