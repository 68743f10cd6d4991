using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using LivePatch.X86;

namespace LivePatch.Bench;

/// <summary>
/// What a callee-save thunk costs a call: the same small function (<c>lea eax,[rdi+rdi*2]; ret</c>) called directly,
/// through a thunk keeping one register (rcx, the tests' case) and through one keeping every call-clobbered register
/// but rax (8 general, 16 vector registers at this CPU's width: the worst case). 1,000 calls per operation, from C#
/// through an unmanaged function pointer, in executable memory mapped for the benchmark.
/// </summary>
public unsafe class ThunkBenchmarks
{
    private const int Calls = 1000;
    private nint _page;
    private delegate* unmanaged<int, int> _direct;
    private delegate* unmanaged<int, int> _keepingOne;
    private delegate* unmanaged<int, int> _keepingAll;

    [GlobalSetup]
    public void MapCode()
    {
        _page = Mmap(0, 4096, 7 /* rwx */, 0x22 /* private, anonymous */, -1, 0);
        if (_page == -1)
            throw new InvalidOperationException("mmap of an executable page failed");
        var code = new Span<byte>((void*)_page, 4096);
        byte[] scale = [0x8d, 0x04, 0x7f, 0xc3]; // lea eax,[rdi+rdi*2]; ret
        scale.CopyTo(code);
        var all = ClobberSet.Everything.Except(ClobberSet.Of(Iced.Intel.Register.RAX)) with { Masks = 0 };
        var width = CalleeSaveThunk.VectorBytes(CpuFeatures.Detect());
        if (width < 64)
            all = all with { Vectors = 0xffff };
        var address = (ulong)_page;
        CalleeSaveThunk.Assemble(address + 512, address, ClobberSet.Of(Iced.Intel.Register.RCX), width).CopyTo(code[512..]);
        CalleeSaveThunk.Assemble(address + 1536, address, all, width).CopyTo(code[1536..]);
        _direct = (delegate* unmanaged<int, int>)_page;
        _keepingOne = (delegate* unmanaged<int, int>)(_page + 512);
        _keepingAll = (delegate* unmanaged<int, int>)(_page + 1536);
        if (_direct(7) != 21 || _keepingOne(7) != 21 || _keepingAll(7) != 21)
            throw new InvalidOperationException("the thunks do not return what the function returns");
    }

    [GlobalCleanup]
    public void Unmap() => _ = Munmap(_page, 4096);

    [Benchmark(Baseline = true, OperationsPerInvoke = Calls, Description = "direct call")]
    public int Direct() => Loop(_direct);

    [Benchmark(OperationsPerInvoke = Calls, Description = "through a thunk keeping rcx")]
    public int KeepingOne() => Loop(_keepingOne);

    [Benchmark(OperationsPerInvoke = Calls, Description = "through a thunk keeping every register but rax")]
    public int KeepingAll() => Loop(_keepingAll);

    private static int Loop(delegate* unmanaged<int, int> function)
    {
        var sum = 0;
        for (var i = 0; i < Calls; i++)
            sum += function(i);
        return sum;
    }

    [DllImport("libc", EntryPoint = "mmap")]
    private static extern nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "munmap")]
    private static extern int Munmap(nint address, nuint length);
}
