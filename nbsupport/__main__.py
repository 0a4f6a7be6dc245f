"""Command line: ``python -m nbsupport {run,stage,prepare-model,profiles,report}``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import PROFILES
from . import report
from .launch import STAGES, StageFailed, run_stage
from .home import set_repository
from .models import prepare_embedded
from .runner import NotebookFailed, parse_value, run_series
from .runs import MissingArtifactError, Run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbsupport", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebook series with papermill")
    run.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    run.add_argument("--run-dir", required=True, help="where outputs and executed notebooks go")
    run.add_argument("--notebooks", default=None, help="folder of NN_name.ipynb (default: ./notebooks)")
    run.add_argument("--only", nargs="*", default=(), help="notebook numbers to run, e.g. 01 02")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a notebook parameter, e.g. -p MODEL ./my-model")
    run.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    run.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    run.add_argument("--processes", type=int, default=1,
                     help="run the reinforce, labels and finetune stages on N processes (GPUs) first")
    run.add_argument("--accelerate-config", default=None,
                     help="launch those stages with `accelerate launch` and this config (e.g. FSDP)")
    stage = sub.add_parser("stage", help="run one heavy stage as a script (under torchrun / accelerate launch)")
    stage.add_argument("name", choices=sorted(STAGES))
    stage.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    stage.add_argument("--run-dir", required=True)
    stage.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a notebook parameter, as for run")
    prep = sub.add_parser("prepare-model", help="convert the embedded GGUF model into the cache once")
    prep.add_argument("--rebuild", action="store_true", help="convert again even if a cache exists")
    sub.add_parser("profiles", help="print the named parameter profiles")
    home = sub.add_parser("set-repository", help="point the Colab badges and install cells at the course's "
                                                 "public home (run from the repository's root)")
    home.add_argument("url", help="https://github.com/ORG/REPO")
    rep = sub.add_parser("report", help="print a run's results as a Markdown table (after notebook 06); "
                                        "with --markdown, write the results page")
    rep.add_argument("--run-dir", help="the run to report (after notebook 06)")
    rep.add_argument("--markdown", help="write the results page here (e.g. docs/RESULTS.md), keeping the run's "
                                        "record and figures in --json-dir")
    rep.add_argument("--json-dir", default=None, help="the records the page is written from "
                                                      "(default: results/ beside the page)")
    rep.add_argument("--name", default=None, help="the run's record name (default: its profile)")
    rep.add_argument("--render", action="store_true", help="write the page from the kept records only")
    args = parser.parse_args(argv)

    if args.command == "profiles":
        print(json.dumps(PROFILES, indent=2))
        return 0
    if args.command == "report":
        return _report(args)
    if args.command == "set-repository":
        try:
            counts = set_repository(args.url)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{sum(counts.values())} addresses rewritten in {sum(1 for n in counts.values() if n)} files")
        return 0
    if args.command == "prepare-model":
        print(prepare_embedded(rebuild=args.rebuild))
        return 0

    params = {name: parse_value(value) for name, value in args.parameter}
    if args.command == "stage":
        run_stage(args.name, args.profile, args.run_dir, params)
        return 0
    try:
        results = run_series(args.profile, args.run_dir, args.notebooks, args.only, params,
                             log_output=args.log_output, progress=not args.no_progress,
                             processes=args.processes, accelerate_config=args.accelerate_config)
    except (NotebookFailed, StageFailed) as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:   # lm-eval missing or its data unreachable, a plan that cannot fit
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(r.seconds for r in results)
    for r in results:
        print(f"  {r.notebook:<40} {r.seconds:7.0f} s")
    print(f"all {len(results)} notebook(s) ran in {total:.0f} s")
    return 0


def _report(args) -> int:
    if args.render == bool(args.run_dir):
        print("error: give --run-dir R (a run to report) or --render (the kept records only), not both",
              file=sys.stderr)
        return 2
    if args.render and not args.markdown:
        print("error: --render writes the page: give --markdown docs/RESULTS.md", file=sys.stderr)
        return 2
    json_dir = Path(args.json_dir) if args.json_dir else Path(args.markdown or ".").parent / "results"
    try:
        if args.run_dir:
            run = Run(args.run_dir)
            print(report.results_markdown(run))
            if args.markdown:
                name = args.name or (run.read_json("run.json").get("profile") if run.exists("run.json") else None)
                if not name:
                    print("error: give --name: the run directory does not say its profile", file=sys.stderr)
                    return 2
                print(f"kept {report.keep_record(run, json_dir, name)}")
        if args.markdown:
            times = report.TIMES_PATH if report.course_page(args.markdown) else None
            report.write_page(json_dir, args.markdown, times=times)
            print(f"wrote {args.markdown}" + (f" and {times}" if times else ""))
    except MissingArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
