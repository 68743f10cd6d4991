using LivePatch.Live;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;
using LivePatch.Tests.Targets;

namespace LivePatch.Tests.Fixtures;

/// <summary>A target's code at some addresses and its memory map, to prove an action changed nothing.</summary>
internal sealed class TargetSnapshot
{
    private readonly int _pid;
    private readonly Dictionary<ulong, byte[]> _code;
    private readonly string _maps;

    private TargetSnapshot(int pid, Dictionary<ulong, byte[]> code, string maps)
    {
        _pid = pid;
        _code = code;
        _maps = maps;
    }

    public static TargetSnapshot Take(int pid, params ulong[] addresses)
    {
        using var target = TargetProcess.Open(pid);
        return new TargetSnapshot(pid, addresses.ToDictionary(a => a, a => target.ReadMemory(a, 32)), File.ReadAllText($"/proc/{pid}/maps"));
    }

    public void AssertUnchanged()
    {
        using var target = TargetProcess.Open(_pid);
        foreach (var (address, bytes) in _code)
            Assert.Equal(Convert.ToHexString(bytes), Convert.ToHexString(target.ReadMemory(address, bytes.Length)));
        Assert.Equal(_maps, File.ReadAllText($"/proc/{_pid}/maps"));
        // While a LivePatcher is attached the tracer is this test process; what matters is that nobody else is.
        Assert.Contains(RunningTarget.TracerProcess(_pid), new[] { 0, Environment.ProcessId });
    }
}
