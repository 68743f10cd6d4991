using LivePatch.Cli;
using LivePatch.Elf;
using LivePatch.Live;
using LivePatch.Payloads;
using LivePatch.Poke;
using LivePatch.Sites;
using LivePatch.Targets;
using LivePatch.X86;

namespace LivePatch.Tests.Cli;

/// <summary>One exception base, one exit code per kind: nothing the library throws on purpose reads as an internal error.</summary>
public class FailureTests
{
    public static TheoryData<LivePatchException, int> Failures => new()
    {
        { new TargetException(TargetError.Exited, 42, "process 42 exited"), ExitCodes.Target },
        { new TargetException(TargetError.NotFound, 42, "no process with PID 42"), ExitCodes.Target },
        { new TargetException(TargetError.Busy, 42, "process 42 is busy"), ExitCodes.Refused },
        { new TargetException(TargetError.Timeout, 42, "thread 43 stayed inside"), ExitCodes.Timeout },
        { new ElfFormatException("bad magic", 0), ExitCodes.Payload },
        { new PayloadException("fix.o", "no records"), ExitCodes.Payload },
        { new SymbolResolutionException("compute", [], "no symbol 'compute'"), ExitCodes.Payload },
        { new SiteTableException(".lp.altinstructions", 3, "site outside the code"), ExitCodes.Payload },
        { new PatchletException("lp_native_rdtsc", "is empty"), ExitCodes.Payload },
        { new PatchTooLongException(0x1000, 5, 6, "the replacement needs 6 bytes but the site at 0x1000 has 5"), ExitCodes.Payload },
        { new InvalidInstructionException(0x1000, "not an instruction at 0x1000"), ExitCodes.Payload },
        { new RelocationException("cannot relocate"), ExitCodes.Payload },
        { new BranchOutOfRangeException(0x1000, 0x7f0000000000), ExitCodes.Payload },
        { new PatchRefusedException(LivePatchRefusal.NotOnTop, "payload 'a' is not on top"), ExitCodes.Refused },
        { new SiteRefusedException(SiteRefusal.ThreadsOnSeveralCpus, "2 threads"), ExitCodes.Refused },
        { new TextPokeException(0x1000, "another tool changed it"), ExitCodes.Refused },
    };

    [Theory]
    [MemberData(nameof(Failures))]
    public void Each_kind_of_failure_has_its_exit_code(LivePatchException error, int code)
    {
        Assert.Equal(code, Failure.Report(error));
    }

    [Fact]
    public void Anything_else_is_an_internal_error()
    {
        Assert.Equal(ExitCodes.Internal, Failure.Report(new InvalidOperationException("a bug")));
    }

    [Fact]
    public void Every_exception_type_of_the_library_derives_from_the_one_base()
    {
        var outside = typeof(LivePatchException).Assembly.GetTypes()
            .Where(t => typeof(Exception).IsAssignableFrom(t) && !typeof(LivePatchException).IsAssignableFrom(t))
            .Select(t => t.FullName).ToList();

        Assert.Empty(outside);
    }
}
