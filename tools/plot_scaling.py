#!/usr/bin/env python3
"""Draws the grid-scaling plot of docs/BENCHMARKS.md from `pfhe bench --json` reports.

Each report is one grid (its patch count is in the report); every run in it becomes a
point of the line of its configuration (e.g. "threads W=1"). Left: encrypted inference
latency; right: the run's peak resident memory. Grids served from the model file (every
task compiles its lane group, "compiled_per_task" in the report) are drawn hollow and
labelled. Needs Debian's python3-matplotlib.

    tools/plot_scaling.py --out scaling.png cryptofacenet4/bench.json cryptofacenet9/bench.json ...
"""
import argparse
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("reports", nargs="+", help="pfhe bench --json reports, one per grid")
    args = parser.parse_args()
    lines = {}  # run label -> [(patches, seconds, peak GB, compiled per task)]
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        patches = report["patches"]
        for run in report["runs"]:
            if not run["ok"]:
                print(f"{path}: run {run['run']} failed, left out", file=sys.stderr)
                continue
            lines.setdefault(run["run"], []).append(
                (patches, run["infer_seconds"], run["peak_rss_gb"], report.get("compiled_per_task", False)))
    if not lines:
        print("no successful runs in the reports", file=sys.stderr)
        return 1
    fig, (latency, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in sorted(lines.items()):
        points.sort()
        grids = [f"{math.isqrt(p)}x{math.isqrt(p)}" for p, _, _, _ in points]
        for axis, values in ((latency, [s for _, s, _, _ in points]), (memory, [m for _, _, m, _ in points])):
            line, = axis.plot(grids, values, marker="o", label=label)
            for grid, value, point in zip(grids, values, points):
                if point[3]:
                    axis.plot([grid], [value], marker="o", markersize=10, markerfacecolor="none",
                              color=line.get_color())
                    axis.annotate("compiled per task", (grid, value), textcoords="offset points", xytext=(-90, 6),
                                  fontsize=7)
    latency.set_title("Encrypted PatchCNN inference")
    latency.set_xlabel("patch grid (32x32 patches)")
    latency.set_ylabel("seconds (2-core machine)")
    memory.set_title("Peak resident memory of the run")
    memory.set_xlabel("patch grid (32x32 patches)")
    memory.set_ylabel("GB")
    for axis in (latency, memory):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
