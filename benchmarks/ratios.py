"""Print each benchmark group's median timings as ratios to a reference in the same run.

Benchmarks that timed references themselves, interleaved with their own rounds (every
group of `make bench`: extra_info "<name>_cpu_seconds"), print the benchmarked call's time
("fast": the fast path, our feature path, or a kernel against the calibration GEMM) as a
ratio to each of them, then the
ratio of each round (the fast path over the reference run right before it): their median, an
interval for it that holds with the stated coverage whatever the distribution (order
statistics), and, where the benchmark states a target, whether the run meets it: "met"
when the whole interval is at or under the target, "not met" when it is all above,
"not resolved" when the interval straddles it. The interval is this run's round-to-round
spread only; separate runs on a shared machine differ by more (reports/perf/cpu.md). Last,
each path's minor page faults per call, where the platform counts them: part of its CPU time,
and the part that moves with the allocator's state from process to process. A group without
such references prints its median times as ratios to its alphabetically first entry.
"""
import json
import statistics
import sys
from collections import defaultdict

data = json.load(open(sys.argv[1]))
groups = defaultdict(list)
for b in data["benchmarks"]:
    groups[b["group"]].append(b)
for group, items in groups.items():
    items.sort(key=lambda b: b["name"])
    paired = [b for b in items if b.get("extra_info", {}).get("fast_cpu_seconds")]
    if paired:
        threads = sorted({b["extra_info"].get("threads") for b in paired})
        refs = [k[len("fast_over_"):-len("_cpu_median")] for k in sorted(paired[0]["extra_info"])
                if k.startswith("fast_over_") and k.endswith("_cpu_median")]
        allocators = sorted({b["extra_info"].get("allocator", "not recorded") for b in paired})
        print(f"{group}: the benchmarked call (fast) as a ratio to each reference, interleaved rounds, "
              f"torch threads {threads}; allocator: {'; '.join(allocators)}")
        print(f"  {'':40s} {'CPU s, median':>30s}   fast / ref (CPU median, CPU min, wall median)")
        print(f"  {'name':40s} {'fast':>9s} " + " ".join(f"{r[:9]:>9s}" for r in refs))
        for b in paired:
            e = b["extra_info"]
            cols = [statistics.median(e["fast_cpu_seconds"])] + [statistics.median(e[f"{r}_cpu_seconds"]) for r in refs]
            ratios = "   ".join(f"{r}: {e[f'fast_over_{r}_cpu_median']:.2f} {e[f'fast_over_{r}_cpu_min']:.2f} "
                               f"{e[f'fast_over_{r}_wall_median']:.2f}" for r in refs)
            print(f"  {b['name']:40s} " + " ".join(f"{c:9.4f}" for c in cols) + f"   {ratios}")
        rounds = [(b, r) for b in paired for r in refs if f"fast_over_{r}_cpu_interval" in b["extra_info"]]
        if rounds:
            print("  per round, fast / ref (CPU): median [interval for the median, its coverage]; target")
        for b, r in rounds:
            e = b["extra_info"]
            low, high, coverage = e[f"fast_over_{r}_cpu_interval"]
            line = (f"  {b['name']:40s} {r}: {statistics.median(e[f'fast_over_{r}_cpu_rounds']):.3f} "
                    f"[{low:.3f}, {high:.3f}] {coverage:.0%} of {len(e[f'fast_over_{r}_cpu_rounds'])} rounds")
            target = e.get(f"fast_over_{r}_target")
            if target is not None:
                verdict = "met" if high <= target else "not met" if low > target else "not resolved"
                line += f"; target <= {target:.3g}: {verdict}"
            print(line)
        faults = [b for b in paired if "fast_minor_faults" in b["extra_info"]]
        if faults:
            print("  minor page faults per call, median (pages of fresh memory the call touched; they cost CPU time)")
        for b in faults:
            e = b["extra_info"]
            print(f"  {b['name']:40s} " + "   ".join(f"{k} {statistics.median(e[f'{k}_minor_faults']):.0f}"
                                                     for k in ["fast"] + refs if f"{k}_minor_faults" in e))
        continue
    base = items[0]
    print(f"{group}: median seconds, and ratio to {base['name']}")
    for b in items:
        med = b["stats"]["median"]
        print(f"  {b['name']:45s} {med:9.4f} s   x{med / base['stats']['median']:7.2f}")
