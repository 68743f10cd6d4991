using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace LivePatch.Targets;

/// <summary>
/// The one OS thread that issues every ptrace request for a session: the kernel accepts requests for
/// a tracee only from the thread that attached it, so no request may run anywhere else.
/// </summary>
internal sealed class TracerThread : IDisposable
{
    private readonly BlockingCollection<Action> _work = [];
    private readonly Thread _thread;

    public TracerThread(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public bool IsCurrent => Environment.CurrentManagedThreadId == _thread.ManagedThreadId;

    /// <summary>Runs <paramref name="work"/> on the tracer thread and returns its result, or rethrows its exception.</summary>
    public T Invoke<T>(Func<T> work)
    {
        if (IsCurrent)
            return work();
        T result = default!;
        ExceptionDispatchInfo? failure = null;
        using var done = new ManualResetEventSlim();
        _work.Add(() =>
        {
            try
            {
                result = work();
            }
            catch (Exception error)
            {
                failure = ExceptionDispatchInfo.Capture(error);
            }
            finally
            {
                done.Set();
            }
        });
        done.Wait();
        failure?.Throw();
        return result;
    }

    public void Invoke(Action work) => Invoke(() =>
    {
        work();
        return 0;
    });

    public void Dispose()
    {
        _work.CompleteAdding();
        if (!IsCurrent)
            _thread.Join();
        _work.Dispose();
    }

    private void Loop()
    {
        // Best effort, where allowed (root or CAP_SYS_NICE): real-time priority lets the tracer preempt the target's
        // threads the moment it wakes, so stopping and resuming them does not wait for their time slices. Every
        // loop on this thread sleeps between polls and ends at a deadline, so it cannot hog a CPU.
        Native.Libc.SchedSetScheduler(0, Native.Libc.SchedFifo, 1);
        foreach (var work in _work.GetConsumingEnumerable())
            work();
    }
}
