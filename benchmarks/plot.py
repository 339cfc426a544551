"""Figures of a ``python -m benchmarks.run`` report (matplotlib, no display needed).

    python benchmarks/plot.py                                   # the newest benchmarks/results/run_*.json
    python benchmarks/plot.py benchmarks/results/run_all_quick_20261202-150000.json -o fig.png

One PNG with a panel per case the report holds: energy + forces time against N for mlpjax and the
peers (log-log), MD time per step mlpjax vs mlip / vs ASE, the ensembles' cost relative to NVT,
the fraction of the machine's peak, MD atom-steps/s against N and training structures/s against
batch size. Cases that failed or were not run are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cases(report: dict) -> dict:
    return {c["name"]: c.get("data") for c in report.get("cases", []) if not c.get("error") and c.get("data")}


def _peers(ax, d):
    sizes = d["sizes"]
    for model, marker in (("mace", "o"), ("nequip", "s")):
        mine = d["mlpjax"].get(model, {})
        ys = [mine.get(str(n), {}).get("inference_s") for n in sizes]
        pts = [(n, y) for n, y in zip(sizes, ys) if y]
        if pts:
            ax.plot(*zip(*pts), marker=marker, color="C0", label=f"mlpjax {model}")
        mlip = ((d.get("mlip") or {}).get("models") or {}).get(model, {})
        pts = [(s["n_atoms"], s["inference_s"]) for s in mlip.get("sizes", []) if "inference_s" in s]
        if pts:
            ax.plot(*zip(*pts), marker=marker, ls="--", color="C1", label=f"mlip {model}")
    torch = (d.get("mace_torch") or {}).get("sizes", [])
    if torch:
        ax.plot([s["n_atoms"] for s in torch], [s["inference_s"] for s in torch], marker="o", ls=":", color="C2",
                label="mace-torch mace")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _size_ticks(ax, sizes)
    ax.set_xlabel("atoms")
    ax.set_ylabel("energy + forces per call (s)")
    ax.set_title("one call, same hyperparameters")
    ax.legend(fontsize=7)


def _size_ticks(ax, sizes):
    """Plain tick labels at the measured sizes on a log axis (no overlapping 10^k·m labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xticks(sorted(set(sizes)))
    ax.set_xticklabels([str(n) for n in sorted(set(sizes))], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _bars(ax, labels, values, title, ylabel):
    ax.bar(range(len(values)), values, color=[f"C{i}" for i in range(len(values))])
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, fontsize=7, rotation=20)
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def plot_report(report: dict, path) -> Path:
    """Write the report's figure to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _cases(report)
    panels = [k for k in ("peers", "md_peers", "md_vs_ase", "npt_vs_nvt", "flops", "md_scaling", "train_scaling") if k in data]
    if not panels:
        raise ValueError("the report has no case with data to plot")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        d = data[key]
        if key == "peers":
            _peers(ax, d)
        elif key == "md_peers":
            labels, vals = ["mlpjax"], [1.0 / d["mlpjax"]["steps_per_s"]]
            if d.get("mlip"):
                labels.append("mlip")
                vals.append(1.0 / d["mlip"]["steps_per_s"])
            _bars(ax, labels, vals, f"MACE MD, {d['mlpjax']['n_atoms']} atoms", "s per step")
        elif key == "md_vs_ase":
            labels, vals = [], []
            for r in d["results"]:
                labels += [f"mlpjax.md {r['n_atoms']}", f"ASE {r['n_atoms']}"]
                vals += [1.0 / r["mlpjax"]["steps_per_s"], 1.0 / r["ase"]["steps_per_s"]]
            _bars(ax, labels, vals, "SchNet MD: jax-md loop vs ASE", "s per step")
        elif key == "npt_vs_nvt":
            res = d["results"]
            base = 1.0 / res["nvt"]["steps_per_s"]
            _bars(ax, list(res), [(1.0 / v["steps_per_s"]) / base for v in res.values()],
                  f"ensembles, {d['n_atoms']} atoms", "time per step / NVT")
        elif key == "flops":
            models = list(d["models"])
            _bars(ax, models, [100 * d["models"][m]["fraction_of_peak"] for m in models],
                  f"E+F FLOP rate, peak {d['peak']['peak_flops_per_s'] / 1e9:.0f} GFLOP/s", "% of measured peak")
        elif key == "md_scaling":
            rs = d["results"]
            ax.plot([r["n_atoms"] for r in rs], [r["atom_steps_per_s"] for r in rs], marker="o")
            ax.set_xscale("log")
            _size_ticks(ax, [r["n_atoms"] for r in rs])
            ax.set_xlabel("atoms")
            ax.set_ylabel("atom-steps/s")
            ax.set_ylim(bottom=0)
            ax.set_title("MD throughput vs N (SchNet)")
        elif key == "train_scaling":
            rs = d["results"]
            ax.plot([r["batch_size"] for r in rs], [r["structures_per_s"] for r in rs], marker="o")
            ax.set_xscale("log", base=2)
            _size_ticks(ax, [r["batch_size"] for r in rs])
            ax.set_xlabel("batch size")
            ax.set_ylabel("training structures/s")
            ax.set_ylim(bottom=0)
            ax.set_title("training throughput (SchNet, 32 atoms)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    m = report.get("machine", {})
    fig.suptitle(f"python -m benchmarks.run {report.get('argv', '')} — {m.get('device', '')}, {report.get('date', '')[:10]}",
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="?", default=None, help="a run report (default: the newest benchmarks/results/run_*.json)")
    ap.add_argument("-o", "--output", default=None, help="PNG path (default: the JSON's path with .png)")
    args = ap.parse_args(argv)
    path = Path(args.json) if args.json else max(RESULTS_DIR.glob("run_*.json"), key=lambda p: p.stat().st_mtime, default=None)
    if path is None:
        raise SystemExit("no benchmarks/results/run_*.json yet: run `python -m benchmarks.run --quick` first")
    report = json.loads(path.read_text())
    out = plot_report(report, args.output or path.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
