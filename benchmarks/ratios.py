"""Print each benchmark group's median timings as ratios to a reference in the same run.

Group "kernels": ratio to the calibration GEMM (gemm-512). Other groups: ratio
to their alphabetically first entry.
"""
import json
import sys
from collections import defaultdict

data = json.load(open(sys.argv[1]))
groups = defaultdict(list)
for b in data["benchmarks"]:
    groups[b["group"]].append(b)
for group, items in groups.items():
    items.sort(key=lambda b: b["name"])
    base = next((b for b in items if "gemm-512" in b["name"]), items[0])
    print(f"{group}: median seconds, and ratio to {base['name']}")
    for b in items:
        med = b["stats"]["median"]
        print(f"  {b['name']:45s} {med:9.4f} s   x{med / base['stats']['median']:7.2f}")
