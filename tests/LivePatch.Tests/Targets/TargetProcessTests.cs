using LivePatch.Elf;
using LivePatch.Targets;
using LivePatch.Tests.Fixtures;

namespace LivePatch.Tests.Targets;

[Collection(ProcessTests.Name)]
public class TargetProcessTests
{

    [Fact]
    public void Symbols_resolve_to_the_addresses_the_process_itself_sees()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "2");
        using var target = TargetProcess.Open(worker.Pid);

        Assert.Equal(worker.ReadyAddress("compute"), target.ResolveSymbol("compute").Address);
        Assert.Equal(worker.ReadyAddress("helper"), target.ResolveSymbol("helper").Address);
        var secret = target.ResolveSymbol("secret");
        Assert.Equal(worker.ReadyAddress("secret"), secret.Address);
        Assert.Equal(ElfSymbolBinding.Local, secret.Binding);
        Assert.Equal(worker.ReadyAddress("counter"), target.ResolveSymbol("counter").Address);
        Assert.True(target.MainModule.IsMainExecutable);
        Assert.Contains(target.Modules, m => m.Name.StartsWith("libc.so", StringComparison.Ordinal));
    }

    [Fact]
    public void Module_names_qualify_a_symbol()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var target = TargetProcess.Open(worker.Pid);
        var exe = target.MainModule.Name;

        Assert.Equal(worker.ReadyAddress("compute"), target.ResolveSymbol($"{exe}!compute").Address);
        Assert.Equal(target.ResolveSymbol("libc.so.6!getpid").Address, target.ResolveSymbol("libc!getpid").Address);
        var unknownModule = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("libnothere.so!compute"));
        Assert.Contains("no module 'libnothere.so'", unknownModule.Message, StringComparison.Ordinal);
    }

    // As distributions install them: the file libscale.so.1.0.7, its soname libscale.so.1 (a link to it, what
    // DT_NEEDED names), and the name operators write without a version.
    [Fact]
    public void A_library_is_named_by_its_file_name_its_soname_or_its_name_without_version()
    {
        var directory = ExternalTool.ScratchDirectory("soname");
        var library = Gcc.Compile("targets/libscale.c", "-O2 -g -shared -fPIC -Wl,-soname,libscale.so.1", Path.Combine(directory, "libscale.so.1.0.7"));
        File.CreateSymbolicLink(Path.Combine(directory, "libscale.so.1"), library);
        var executable = Gcc.Compile("targets/withlib.c", $"-O2 -g -Wl,--no-as-needed {Path.Combine(directory, "libscale.so.1")} -Wl,-rpath,{directory}", Path.Combine(directory, "withlib-soname"));
        using var withlib = RunningTarget.StartExecutable(executable);
        using var target = TargetProcess.Open(withlib.Pid);

        var scale = target.ResolveSymbol("libscale.so.1.0.7!scale");

        var module = Assert.Single(target.Modules, m => m.Name == "libscale.so.1.0.7");
        Assert.Equal("libscale.so.1", module.Elf.Soname);
        Assert.Null(target.MainModule.Elf.Soname);
        Assert.Equal(scale.Address, target.ResolveSymbol("libscale.so.1!scale").Address);
        Assert.Equal(scale.Address, target.ResolveSymbol("libscale!scale").Address);
        Assert.Equal(scale.Address, target.ResolveSymbol($"{module.Path}!scale").Address);
        var unknown = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("libscale.so.2!scale"));
        Assert.Contains("no module 'libscale.so.2'", unknown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_name_that_fits_two_libraries_is_refused_naming_both()
    {
        var directory = ExternalTool.ScratchDirectory("sonames");
        foreach (var version in new[] { "1", "2" })
        {
            var file = Gcc.Compile("targets/libscale.c", $"-O2 -g -shared -fPIC -Wl,-soname,libscale.so.{version}", Path.Combine(directory, $"libscale.so.{version}.0.0"));
            File.CreateSymbolicLink(Path.Combine(directory, $"libscale.so.{version}"), file);
        }
        var executable = Gcc.Compile("targets/withlib.c",
            $"-O2 -g -Wl,--no-as-needed {Path.Combine(directory, "libscale.so.1")} {Path.Combine(directory, "libscale.so.2")} -Wl,-rpath,{directory}", Path.Combine(directory, "withlib-two"));
        using var withlib = RunningTarget.StartExecutable(executable);
        using var target = TargetProcess.Open(withlib.Pid);

        var error = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("libscale!scale"));

        Assert.Matches(@"^'libscale' names several modules in process \d+: .*/libscale\.so\.1\.0\.0, .*/libscale\.so\.2\.0\.0; name one by its file name, soname or path$", error.Message);
        Assert.NotEqual(target.ResolveSymbol("libscale.so.1!scale").Address, target.ResolveSymbol("libscale.so.2!scale").Address);
    }

    [Fact]
    public void An_unknown_symbol_is_named_in_the_error()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var target = TargetProcess.Open(worker.Pid);

        var error = Assert.Throws<SymbolResolutionException>(() => target.ResolveSymbol("no_such_function"));

        Assert.Contains("no symbol 'no_such_function'", error.Message, StringComparison.Ordinal);
        Assert.Empty(error.Candidates);
    }

    [Fact]
    public void Default_symbol_versions_win_over_old_ones()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "1");
        using var target = TargetProcess.Open(worker.Pid);

        // glibc exports memcpy@GLIBC_2.2.5 and memcpy@@GLIBC_2.14 at different addresses.
        var memcpy = target.ResolveSymbol("libc.so.6!memcpy");

        Assert.False(memcpy.IsNonDefaultVersion);
    }

    [Fact]
    public void A_binary_replaced_on_disk_still_resolves_to_the_code_that_runs()
    {
        var built = RunningTarget.Build("targets/worker.c", TestTargets.WorkerFlags);
        var copy = Path.Combine(ExternalTool.ScratchDirectory("replaced"), "worker");
        File.Copy(built, copy);
        using var worker = RunningTarget.StartExecutable(copy, "1");
        File.Delete(copy);
        File.Copy("/bin/true", copy); // a different program now sits at the same path

        using var target = TargetProcess.Open(worker.Pid);

        Assert.EndsWith("(deleted)", target.MainModule.Path, StringComparison.Ordinal);
        Assert.Equal(worker.ReadyAddress("compute"), target.ResolveSymbol("compute").Address);
    }

    [Fact]
    public void A_pid_that_does_not_exist_is_refused()
    {
        var error = Assert.Throws<TargetException>(() => TargetProcess.Open(int.MaxValue - 7));

        Assert.Equal(TargetError.NotFound, error.Error);
        Assert.Contains($"no process with PID {int.MaxValue - 7}", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Threads_are_listed_from_proc()
    {
        using var worker = RunningTarget.Start("targets/worker.c", TestTargets.WorkerFlags, "4");
        using var target = TargetProcess.Open(worker.Pid);

        var threads = target.ThreadIds();

        Assert.Equal(5, threads.Count);
        Assert.Contains(worker.Pid, threads);
    }
}
