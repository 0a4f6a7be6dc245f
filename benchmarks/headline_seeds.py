"""The headline rows of the course over several seeds: mean and spread of each
measure, from complete runs of the notebook series (the same code a learner
runs), one run directory per seed.

    python benchmarks/headline_seeds.py --profile cpu --seeds 0 1 2 --run-root runs/seeds
    python benchmarks/headline_seeds.py --profile cpu --seeds 0 1 2 --run-root runs/seeds --methods

Notebooks 01-06 give the headline rows (baseline, the paper's recipe, the chosen
recipe): the measures of notebook 06 (token probes: all, development and report
halves; indirect probes; held-out perplexity; general knowledge) and their
changes. ``--methods`` also runs notebook 07 in each seed's run and prints its
table's main rows (every method: forgetting, cost, the primer and the relearning
attacks). A seed's notebooks that already finished are read back, not run again,
so a finished cpu run can stand as a seed's run (copy it to ``<run-root>/seed-0``
when it ran with SEED 0, the profile's default).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd

from nbsupport import runner

COLUMNS = ("familiarity_drop", "familiarity_dev_drop", "familiarity_report_drop", "familiarity_in_text_report_drop",
           "familiarity_not_in_text_report_drop", "indirect_drop",
           "indirect_report_drop", "perplexity_rise", "knowledge_points", "completion_familiarity",
           "kl_to_baseline")
SERIES = ("01", "02", "03", "04", "05", "06")


def run_seed(profile: str, root: Path, seed: int, parameters: dict, methods: bool) -> tuple[dict, pd.DataFrame | None]:
    """(notebook 06's summary, notebook 07's table or None) of one seed's run."""
    run_dir = root / f"seed-{seed}"
    summary, table = run_dir / "evaluate" / "summary.json", run_dir / "methods" / "summary.csv"
    todo = [] if summary.exists() else list(SERIES)
    if methods and not table.exists():
        todo.append("07")
    if todo:
        results = runner.run_series(profile, run_dir, only=todo, parameters={"SEED": seed, **parameters},
                                    progress=False)
        print(f"seed {seed}: " + ", ".join(f"{r.notebook[:2]} {r.seconds:.0f} s" for r in results), flush=True)
    return json.loads(summary.read_text()), (pd.read_csv(table, index_col=0) if methods else None)


def spread(values: list[float]) -> str:
    """``mean (min..max)``; NaN where a run has no value (e.g. a method that never stopped early)."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return f"{statistics.mean(values):.4g} ({min(values):.4g}..{max(values):.4g}, n={len(values)})"


def main():
    from nbsupport import evaluate, report

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run-root", default="runs/seeds")
    ap.add_argument("--methods", action="store_true", help="also run notebook 07 and print its main rows")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("--json", default=None,
                    help="also keep the headline rows as a record for the results page, e.g. docs/results/seeds-cpu.json "
                         "(then: python -m nbsupport report --render --markdown docs/RESULTS.md)")
    args = ap.parse_args()
    params = {k: runner.parse_value(v) for k, v in args.parameter}
    rows: dict[str, dict[str, list[float]]] = {}
    method_rows: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        summary, table = run_seed(args.profile, Path(args.run_root), seed, params, args.methods)
        base = summary["results"]["baseline"]
        for name, numbers in summary["results"].items():
            label = "baseline" if name == "baseline" else (f"{name} (chosen)" if name == summary["best"] else name)
            merged = {**numbers, **evaluate.relative_to(base, numbers)}
            for col in ("token_familiarity", "indirect_familiarity", "perplexity", "knowledge_accuracy", *COLUMNS):
                if col in merged:
                    rows.setdefault(label, {}).setdefault(col, []).append(merged[col])
        for name, numbers in ({} if table is None else table.to_dict("index")).items():
            for col, value in numbers.items():
                if col != "seconds":
                    method_rows.setdefault(name, {}).setdefault(col, []).append(float(value))
    if args.json:
        record = {"profile": args.profile, "seeds": args.seeds, "commit": report.commit(), "rows": {
            label: {c: {"mean": statistics.mean(v), "min": min(v), "max": max(v)} for c, v in cols.items() if v}
            for label, cols in rows.items()}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"profile {args.profile}, seeds {args.seeds}: mean (min..max, n)")
    for title, table_rows in (("notebook 06", rows), ("notebook 07", method_rows)):
        if table_rows:
            print(f"== {title}")
        for label, cols in table_rows.items():
            print(f"{label}:\n  " + "\n  ".join(f"{c} {spread(v)}" for c, v in cols.items()))


if __name__ == "__main__":
    main()
