using BenchmarkDotNet.Running;

// Run: dotnet run -c Release --project bench/LivePatch.Bench -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(LivePatch.Bench.X86Benchmarks).Assembly).Run(args);
