using System.Globalization;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Cli;

/// <summary><c>livepatch check</c>, <c>apply</c> and <c>list</c> say when a symbol or a replaced function went through a GNU indirect function.</summary>
[Collection(ProcessTests.Name)]
public class IfuncCommandTests
{
    [Fact]
    public void Check_apply_and_list_name_the_ifunc_and_its_implementation()
    {
        using var target = RunningTarget.Start("live/ifunc/strings.c", "-O2 -g -fpie -pie -fcf-protection=full");
        var pid = target.Pid.ToString(CultureInfo.InvariantCulture);
        var counted = TestPayloads.Build("live/ifunc/counted_strlen.c", "-O2 -fno-builtin");
        var measure = TestPayloads.Build("live/ifunc/measure_fix.c", "-O2 -fno-builtin");

        var checkCall = LivepatchCli.Run("check", pid, measure);
        Assert.Equal(0, checkCall.ExitCode);
        Assert.Matches(@"(?m)^ok  symbol strlen: libc\.so\.6!strlen is a GNU indirect function: linked to \S+ at 0x[0-9a-f]+, the implementation process \d+ uses; \d resolved slot\(s\) hold it: ", checkCall.Output);
        var checkReplace = LivepatchCli.Run("check", pid, counted);
        Assert.Equal(0, checkReplace.ExitCode);
        Assert.Matches(@"(?m)^ok  libc\.so\.6!strlen \(ifunc: \S+\): entry 0x[0-9a-f]+ holds .*; through the GNU indirect function libc\.so\.6!strlen, whose implementation in the process is ", checkReplace.Output);

        var apply = LivepatchCli.Run("apply", pid, counted, "--timeout", "2000");
        Assert.Equal(0, apply.ExitCode);
        Assert.Matches(@"^applied counted_strlen to \d+: libc\.so\.6!strlen \(ifunc: \S+\) -> counted_strlen; ", apply.Output);
        Assert.Contains("libc.so.6!strlen (ifunc: ", LivepatchCli.Run("list", pid).Output, StringComparison.Ordinal);
        Assert.Contains("\"ifunc\": \"libc.so.6!strlen\"", LivepatchCli.Run("list", pid, "--json").Output, StringComparison.Ordinal);
    }
}
