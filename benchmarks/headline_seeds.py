"""The headline rows of the course (baseline, the paper's recipe, the chosen recipe)
over several seeds: mean and spread of each measure, from complete runs of the
notebook series (the same code a learner runs), one run directory per seed.

    python benchmarks/headline_seeds.py --profile cpu --seeds 0 1 2 --run-root runs/seeds

A seed's run that already finished is read back, not run again. Columns: the
measures of notebook 06 (token probes: all, development and report halves;
indirect probes; held-out perplexity; general knowledge) and their changes.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from nbsupport import runner

COLUMNS = ("familiarity_drop", "familiarity_dev_drop", "familiarity_report_drop", "indirect_drop",
           "indirect_report_drop", "perplexity_rise", "knowledge_points", "completion_familiarity",
           "kl_to_baseline")


def run_seed(profile: str, root: Path, seed: int, parameters: dict) -> dict:
    run_dir = root / f"seed-{seed}"
    summary = run_dir / "evaluate" / "summary.json"
    if not summary.exists():
        results = runner.run_series(profile, run_dir, parameters={"SEED": seed, **parameters}, progress=False)
        print(f"seed {seed}: " + ", ".join(f"{r.notebook[:2]} {r.seconds:.0f} s" for r in results), flush=True)
    return json.loads(summary.read_text())


def main():
    from nbsupport import evaluate

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run-root", default="runs/seeds")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = ap.parse_args()
    params = {k: runner.parse_value(v) for k, v in args.parameter}
    rows: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        summary = run_seed(args.profile, Path(args.run_root), seed, params)
        base = summary["results"]["baseline"]
        for name, numbers in summary["results"].items():
            label = "baseline" if name == "baseline" else (f"{name} (chosen)" if name == summary["best"] else name)
            merged = {**numbers, **evaluate.relative_to(base, numbers)}
            for col in ("token_familiarity", "indirect_familiarity", "perplexity", "knowledge_accuracy", *COLUMNS):
                if col in merged:
                    rows.setdefault(label, {}).setdefault(col, []).append(merged[col])
    print(f"profile {args.profile}, seeds {args.seeds}: mean (min..max)")
    for label, cols in rows.items():
        cells = [f"{c} {statistics.mean(v):.4g} ({min(v):.4g}..{max(v):.4g})" for c, v in cols.items()]
        print(f"{label}:\n  " + "\n  ".join(cells))


if __name__ == "__main__":
    main()
