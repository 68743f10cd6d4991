using BenchmarkDotNet.Running;
using LivePatch.Bench.Pause;

// Run: dotnet run -c Release --project bench/LivePatch.Bench -- --filter '*'
//      dotnet run -c Release --project bench/LivePatch.Bench -- pause [--runs 50] [--threads 1,8,64] [--write-docs]
//      dotnet run -c Release --project bench/LivePatch.Bench -- sites [--count 100000] [--write-docs]
//      dotnet run -c Release --project bench/LivePatch.Bench -- calls [--iterations 2000000] [--repeats 3] [--rounds 31] [--write-docs]
//      dotnet run -c Release --project bench/LivePatch.Bench -- stacks [--threads 8] [--stack-kb 4,64,1024] [--runs 200] [--write-docs]
//      dotnet run -c Release --project bench/LivePatch.Bench -- mutants [--count 100000] [--seed 1] [--write-docs]
if (args.Length > 0 && args[0] == "pause")
    return PauseBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "sites")
    return LivePatch.Bench.Sites.ManySitesBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "calls")
    return LivePatch.Bench.Calls.CallsBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "stress")
    return LivePatch.Bench.Stress.StressBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "stacks")
    return LivePatch.Bench.Stacks.StackScanBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "mutants")
    return LivePatch.Bench.Mutants.MutantsBenchmark.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(LivePatch.Bench.X86Benchmarks).Assembly).Run(args);
return 0;
