using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Live;

/// <summary>A call in an old function's first 5 bytes: its return address lies inside the jump apply writes.</summary>
[Collection(ProcessTests.Name)]
public sealed class EntryCallTests : IDisposable
{
    private readonly string _trigger = Path.Combine(Path.GetTempPath(), $"livepatch-trigger-{Guid.NewGuid():N}");

    public void Dispose() => File.Delete(_trigger);

    [Fact]
    public void Apply_waits_while_a_thread_would_return_into_the_jump_and_goes_through_once_it_has()
    {
        var assembly = Gcc.FixturePath("targets/shortcall.S");
        using var target = RunningTarget.Start("targets/shortcall.c", $"-O2 -g -pthread {assembly}", _trigger);
        target.WaitForLine(l => l == "inside=1", TimeSpan.FromSeconds(10));
        var entry = target.ReadyAddress("call_first");
        var before = Code(target.Pid, entry);
        var payload = TestPayloads.Build("live/apply/shortcall_fix.c");
        using var patcher = LivePatcher.Attach(target.Pid, Generous.Options);

        var error = Assert.Throws<TargetException>(() => patcher.Apply(payload));

        Assert.Equal(TargetError.Timeout, error.Error);
        Assert.Contains("!call_first (a call inside the bytes being replaced)", error.Message, StringComparison.Ordinal);
        Assert.Contains("it would return into the middle of the new bytes", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, Code(target.Pid, entry));

        File.WriteAllText(_trigger, "");
        Assert.Equal("outside=1 left=1", target.WaitForLine(l => l.StartsWith("outside=1", StringComparison.Ordinal), TimeSpan.FromSeconds(10)));
        patcher.Apply(payload);
        File.WriteAllText(_trigger, ""); // leaves wait_outside
        target.WaitForLine(l => l == "inside=2", TimeSpan.FromSeconds(10));
        File.WriteAllText(_trigger, "");
        Assert.Equal("outside=2 left=100", target.WaitForLine(l => l.StartsWith("outside=2", StringComparison.Ordinal), TimeSpan.FromSeconds(10)));
    }

    private static string Code(int pid, ulong address)
    {
        using var process = TargetProcess.Open(pid);
        return Convert.ToHexString(process.ReadMemory(address, 16));
    }
}
