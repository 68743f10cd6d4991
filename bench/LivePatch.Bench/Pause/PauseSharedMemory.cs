using System.Diagnostics;
using System.IO.MemoryMappedFiles;

namespace LivePatch.Bench.Pause;

/// <summary>
/// The /dev/shm file the target writes its stalls into (layout: header and slots in bench/pause/target.c).
/// The harness opens a window, does one operation, then reads the longest stalls the target saw in it.
/// </summary>
internal sealed class PauseSharedMemory : IDisposable
{
    private const ulong Magic = 0x3145535541504c4c; // "LLPAUSE1"
    private const long EpochOffset = 64;
    private const long WindowStartOffset = 72;
    private const long SlotsOffset = 256;
    private const long SlotSize = 64;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private ulong _epoch;

    public PauseSharedMemory(string path, int threads)
    {
        if (!Stopwatch.IsHighResolution || Stopwatch.Frequency != 1_000_000_000)
            throw new InvalidOperationException($"Stopwatch must count CLOCK_MONOTONIC nanoseconds to share timestamps with the target (frequency {Stopwatch.Frequency})");
        Path = path;
        Threads = threads;
        var size = SlotsOffset + SlotSize * threads;
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite))
            stream.SetLength(size);
        _file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, mapName: null, size, MemoryMappedFileAccess.ReadWrite);
        _view = _file.CreateViewAccessor(0, size);
    }

    public string Path { get; }

    public int Threads { get; }

    /// <summary>True once the target has mapped the file and started its threads.</summary>
    public bool IsReady => _view.ReadUInt64(0) == Magic;

    /// <summary>CLOCK_MONOTONIC in nanoseconds, the clock the target stamps with.</summary>
    public static ulong Now() => (ulong)Stopwatch.GetTimestamp();

    /// <summary>Starts a new window: every thread zeroes its maxima when it next runs and counts only time after now.</summary>
    public void OpenWindow()
    {
        _epoch++;
        _view.Write(WindowStartOffset, Now());
        Thread.MemoryBarrier();
        _view.Write(EpochOffset, _epoch);
    }

    /// <summary>
    /// Waits until every busy thread has run again after <paramref name="after"/> (so every gap that an operation
    /// caused is closed and recorded), then returns the window's longest stalls.
    /// </summary>
    public Stall ReadStall(ulong after, TimeSpan timeout)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)timeout.TotalNanoseconds;
        while (true)
        {
            var behind = 0;
            var first = "";
            ulong maxGap = 0, maxNone = 0;
            for (var i = 0; i < Threads; i++)
            {
                var slot = SlotsOffset + SlotSize * i;
                if (_view.ReadUInt64(slot) != _epoch || _view.ReadUInt64(slot + 8) < after)
                {
                    if (behind++ == 0)
                        first = $"thread {i}: window {_view.ReadUInt64(slot)} of {_epoch}, last progress {((long)Now() - (long)_view.ReadUInt64(slot + 8)) / 1_000_000} ms ago";
                    continue;
                }
                maxGap = Math.Max(maxGap, _view.ReadUInt64(slot + 16));
                maxNone = Math.Max(maxNone, _view.ReadUInt64(slot + 24));
            }
            if (behind == 0)
                return new Stall(TimeSpan.FromTicks((long)(maxNone / 100)), TimeSpan.FromTicks((long)(maxGap / 100)));
            if (Stopwatch.GetTimestamp() > deadline)
                throw new TimeoutException($"{behind} of {Threads} target threads made no progress within {timeout.TotalSeconds} s after the operation ({first})");
            Thread.Sleep(1);
        }
    }

    public void Dispose()
    {
        _view.Dispose();
        _file.Dispose();
        File.Delete(Path);
    }
}

/// <summary>What the target saw during one window.</summary>
/// <param name="NoProgress">Longest interval in which no busy thread made progress: the stop-the-world pause.</param>
/// <param name="ThreadGap">Longest gap any one thread saw between two iterations, time slicing included.</param>
internal readonly record struct Stall(TimeSpan NoProgress, TimeSpan ThreadGap);
