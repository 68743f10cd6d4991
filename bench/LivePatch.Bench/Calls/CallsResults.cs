using LivePatch.Bench.Common;

namespace LivePatch.Bench.Calls;

/// <summary>What the target's call site holds while a phase is measured.</summary>
internal enum CallsPhase
{
    /// <summary>As gcc built it: the indirect call through the slot.</summary>
    Built,
    /// <summary>After <c>ApplyCallSites(CallSiteBackend.Direct)</c>: a direct call.</summary>
    Direct,
    /// <summary>After <c>RestoreCallSites()</c> and <c>ApplyCallSites(CallSiteBackend.Default)</c>: the native patchlet.</summary>
    Native,
}

/// <summary>One timed loop, per call: wall-clock nanoseconds (CLOCK_MONOTONIC) and TSC ticks.</summary>
internal readonly record struct CallSample(double Nanoseconds, double Ticks);

/// <summary>The repeats of one loop in one phase.</summary>
internal sealed class CallSeries
{
    public List<CallSample> Samples { get; } = [];

    public CallSample Median => new(Middle(s => s.Nanoseconds), Middle(s => s.Ticks));

    public double Min => Samples.Min(s => s.Nanoseconds);

    public double Max => Samples.Max(s => s.Nanoseconds);

    private double Middle(Func<CallSample, double> value)
    {
        var sorted = Samples.Select(value).Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}

/// <summary>What the patcher made of the site for a phase: the backend, its reason, and the pause of each stop that wrote it.</summary>
internal sealed record CallsChoice(string Backend, string Reason, TimeSpan Pause)
{
    public List<TimeSpan> Pauses { get; } = [Pause];

    public TimeSpan MedianPause => Pauses.Order().ElementAt(Pauses.Count / 2);
}

/// <summary>A row of the result table: one loop measured in one phase.</summary>
internal sealed record CallsRow(string Id, string Loop, CallsPhase Phase, string Name, string Runs);

/// <summary>Everything one run of the <c>calls</c> benchmark measured, and what it ran.</summary>
internal sealed class CallsResults(CallsOptions options, Machine machine, string gccFlags)
{
    /// <summary>The rows in the order of the docs, each with what one call executes (checked against the listings).</summary>
    public static readonly IReadOnlyList<CallsRow> Rows =
    [
        new("a", "retpoline", CallsPhase.Built, "C indirect call, retpoline",
            "`calls.identity(x)` built with `-mindirect-branch=thunk`: `mov calls(%rip), %rax; call __x86_indirect_thunk_rax`"),
        new("b", "indirect", CallsPhase.Built, "C indirect call",
            "`calls.identity(x)` in a function marked `indirect_branch(\"keep\")`: `call *calls(%rip)`"),
        new("c", "site", CallsPhase.Built, "`LP_CALL1` site as built",
            "wrapper + 10 bytes of NOPs + `call *calls(%rip)` (inline asm: gcc does not turn it into a retpoline)"),
        new("d", "site", CallsPhase.Direct, "the site, Direct backend",
            "wrapper + 11 bytes of NOPs + `call native_identity`"),
        new("e", "site", CallsPhase.Native, "the site, native patchlet",
            "wrapper + `mov %rdi, %rax` (`lp_native_identity`) + 13 bytes of NOPs: no call"),
        new("r", "direct", CallsPhase.Built, "C direct call (reference)",
            "`native_identity(x)`: `call native_identity`"),
        new("n", "inline", CallsPhase.Built, "no call (floor)",
            "a register `mov` in asm: the loop alone"),
    ];

    private readonly Dictionary<(CallsPhase, string), CallSeries> _series = [];

    public CallsOptions Options { get; } = options;

    public Machine Machine { get; } = machine;

    public string GccFlags { get; } = gccFlags;

    public DateTime Measured { get; } = DateTime.UtcNow;

    /// <summary>Loop bodies (and the retpoline thunk) disassembled from the target when measured, by name.</summary>
    public Dictionary<string, IReadOnlyList<string>> Listings { get; } = [];

    public Dictionary<CallsPhase, CallsChoice> Choices { get; } = [];

    /// <summary>Records a phase's choice: the first one, with the pause of every later stop that made the same choice.</summary>
    public void Choose(CallsPhase phase, CallsChoice choice)
    {
        if (!Choices.TryGetValue(phase, out var first))
            Choices[phase] = choice;
        else if (first.Reason != choice.Reason)
            throw new InvalidOperationException($"{phase}: the backend chose '{choice.Reason}' after '{first.Reason}'");
        else
            first.Pauses.Add(choice.Pause);
    }

    public void Add(CallsPhase phase, string loop, CallSample sample)
    {
        if (!_series.TryGetValue((phase, loop), out var series))
            _series[(phase, loop)] = series = new CallSeries();
        series.Samples.Add(sample);
    }

    public CallSeries Series(CallsPhase phase, string loop) =>
        _series.TryGetValue((phase, loop), out var series) ? series : throw new InvalidOperationException($"loop {loop} was not measured in phase {phase}");

    public CallSeries Series(string rowId)
    {
        var row = Rows.Single(r => r.Id == rowId);
        return Series(row.Phase, row.Loop);
    }

    /// <summary>
    /// The median of the differences between <paramref name="rowId"/>'s loop and the C indirect call (b) run right
    /// before or after it in the same repeat: what the row costs over a plain indirect call, with the machine's slow drift
    /// (which moves both alike) taken out.
    /// </summary>
    public double OverIndirect(string rowId)
    {
        var row = Rows.Single(r => r.Id == rowId);
        var samples = Series(row.Phase, row.Loop).Samples;
        var baseline = Series(row.Phase, "indirect").Samples;
        var differences = samples.Zip(baseline, (x, b) => x.Nanoseconds - b.Nanoseconds).Order().ToList();
        return differences.Count % 2 == 1 ? differences[differences.Count / 2] : (differences[differences.Count / 2 - 1] + differences[differences.Count / 2]) / 2;
    }

    /// <summary>TSC ticks per nanosecond over every sample: the reference clock the ticks column counts in.</summary>
    public double TicksPerNanosecond => _series.Values.SelectMany(s => s.Samples).Sum(s => s.Ticks) / _series.Values.SelectMany(s => s.Samples).Sum(s => s.Nanoseconds);

    /// <summary>Refuses to describe a row with instructions the process did not hold when it was measured (checked every round).</summary>
    public void CheckListings()
    {
        Expect("retpoline", "call __x86_indirect_thunk_rax");
        Expect("retpoline thunk", "lfence");
        Expect("indirect", "call *calls(%rip)");
        Expect("direct", "call native_identity");
        foreach (var phase in Enum.GetValues<CallsPhase>())
            Expect($"site {phase}", "lea -0x80(%rsp), %rsp", "and $0xfffffffffffffff0, %rsp", "mov 8(%rsp), %rsp");
        Expect($"site {CallsPhase.Built}", "call *calls(%rip)");
        Expect($"site {CallsPhase.Direct}", "call native_identity");
        Expect($"site {CallsPhase.Native}", "mov %rdi, %rax");
        foreach (var listing in new[] { $"site {CallsPhase.Native}", "inline" })
        {
            if (Listings[listing].Any(l => l.Contains("call", StringComparison.Ordinal)))
                throw new InvalidOperationException($"the {listing} loop calls: {string.Join("; ", Listings[listing])}");
        }
    }

    private void Expect(string listing, params string[] instructions)
    {
        foreach (var instruction in instructions)
        {
            if (!Listings[listing].Any(l => l.EndsWith(instruction, StringComparison.Ordinal)))
                throw new InvalidOperationException($"the {listing} loop has no '{instruction}': {string.Join("; ", Listings[listing])}");
        }
    }
}
