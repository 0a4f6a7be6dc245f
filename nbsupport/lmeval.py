"""The utility check with the field's harness: EleutherAI's lm-evaluation-harness (``lm-eval``).

Two uses:

* ``general_knowledge_accuracy``: the course's own general-knowledge probes
  (``probe.knowledge_accuracy``) as an lm-eval task built from LOCAL files (a task
  YAML and a JSONL written into a folder), scored the same way: the choice with
  the highest summed log-probability wins. It needs no network, so the
  integration is tested offline and in CI.
* ``paper_benchmarks``: the paper's seven benchmarks (ARC-c, ARC-e, BoolQ,
  HellaSwag, OpenBookQA, PIQA, WinoGrande) on the baseline and the unlearned
  model, as the paper's before/after table (accuracy, ``acc``). lm-eval downloads
  their data sets from the Hugging Face hub, so this is for the gpu and paper
  profiles (``LM_EVAL_BENCHMARKS``) on a machine with network; offline it stops at
  once with a message instead of hanging.

lm-eval is an optional dependency: ``pip install "nbsupport[scale]"``.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Sequence

import pandas as pd

from . import models, probe

PAPER_TASKS = ("arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande")
# Eldan & Russinovich (2023), Llama-2-7b-chat before -> after unlearning (docs/ALGORITHM.md section 6)
PAPER_RESULTS = {"arc_challenge": (0.440, 0.414), "arc_easy": (0.744, 0.724), "boolq": (0.807, 0.796),
                 "hellaswag": (0.577, 0.557), "openbookqa": (0.338, 0.328), "piqa": (0.767, 0.760),
                 "winogrande": (0.663, 0.657)}
GK_TASK = "course_general_knowledge"


class LmEvalUnavailable(RuntimeError):
    """lm-eval is not installed, or the benchmarks' data cannot be downloaded from here."""


def require_lm_eval():
    """The ``lm_eval`` module, or a clear error saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise LmEvalUnavailable('lm-eval is not installed: pip install "nbsupport[scale]" '
                                "(or pip install lm-eval==0.4.13)") from None
    return lm_eval


def model_location(spec: str | os.PathLike) -> str:
    """What lm-eval's ``pretrained=`` takes for a course model spec: the converted
    directory for "embedded", else the local directory or hub id as given."""
    return str(models.prepare_embedded()) if str(spec) == "embedded" else str(spec)


# ----------------------------------------------------------------- the course's set, offline
def write_general_knowledge_task(directory: str | os.PathLike,
                                 probes: Sequence[probe.KnowledgeProbe] | None = None) -> Path:
    """Write the general-knowledge probes as an lm-eval task into ``directory``:
    ``general_knowledge.jsonl`` (one question a line, the answer first among the
    choices) and ``course_general_knowledge.yaml``. Returns the directory, to give
    lm-eval as ``include_path``.

    The choices carry their own leading space, so the task's ``target_delimiter``
    is empty: lm-eval then scores exactly ``prompt + choice``, as the course does.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    probes = probe.load_probes("general_knowledge") if probes is None else list(probes)
    if not probes:
        raise ValueError("no general-knowledge probes to write")
    data = directory / "general_knowledge.jsonl"
    data.write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt, "choices": list(p.choices), "gold": 0})
                            + "\n" for p in probes), encoding="utf-8")
    # JSON is valid YAML: no YAML writer needed, and the path is quoted safely
    task = {"task": GK_TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{prompt}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}", "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1}}
    (directory / f"{GK_TASK}.yaml").write_text(json.dumps(task, indent=2) + "\n", encoding="utf-8")
    return directory


def evaluate(model: str | os.PathLike, tasks: Sequence[str], include_path: str | os.PathLike | None = None,
             batch_size: int = 16, device: str | None = None, dtype: str = "auto", limit: int | None = None,
             log_samples: bool = False) -> dict:
    """Run lm-eval's ``simple_evaluate`` on a Hugging Face model (a local directory,
    "embedded", or a hub id). Returns lm-eval's result dict (``results``, and
    ``samples`` with ``log_samples``)."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
    return simple_evaluate(model="hf", model_args=f"pretrained={model_location(model)},dtype={dtype}",
                           tasks=list(tasks), task_manager=manager, batch_size=batch_size, device=device,
                           limit=limit, log_samples=log_samples)


def general_knowledge_accuracy(model: str | os.PathLike, workdir: str | os.PathLike,
                               probes: Sequence[probe.KnowledgeProbe] | None = None,
                               batch_size: int = 16, device: str | None = None) -> tuple[float, dict]:
    """The course's general-knowledge accuracy measured by lm-eval from local files
    written into ``workdir``. Returns ``(accuracy, lm-eval's full result)``."""
    folder = write_general_knowledge_task(workdir, probes)
    result = evaluate(model, [GK_TASK], include_path=folder, batch_size=batch_size, device=device,
                      dtype="float32", log_samples=True)
    return float(result["results"][GK_TASK]["acc,none"]), result


# ----------------------------------------------------------------- the paper's benchmarks
def hub_reachable(host: str = "huggingface.co", timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub answers (False at once with HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("", "0"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def paper_benchmarks(baseline: str | os.PathLike, unlearned: str | os.PathLike,
                     tasks: Sequence[str] = PAPER_TASKS, batch_size: int | str = "auto",
                     limit: int | None = None) -> pd.DataFrame:
    """The paper's benchmarks before and after unlearning: one row per task with
    the accuracy of ``baseline`` and ``unlearned`` (model specs or directories),
    the change, and the paper's own numbers for Llama-2-7b-chat."""
    require_lm_eval()
    unknown = sorted(set(tasks) - set(PAPER_TASKS))
    if unknown:
        raise ValueError(f"not among the paper's benchmarks: {unknown}; choose from {list(PAPER_TASKS)}")
    if not hub_reachable():
        raise LmEvalUnavailable(
            "the paper's benchmarks (ARC, BoolQ, HellaSwag, OpenBookQA, PIQA, WinoGrande) are downloaded by "
            "lm-eval from the Hugging Face hub, which cannot be reached from here. Run them on a machine with "
            "network (Colab, a GPU server), or set LM_EVAL_BENCHMARKS = False; offline, the course's own "
            "general-knowledge accuracy (notebook 06) is the utility check.")
    scores = {}
    for name, model in (("baseline", baseline), ("unlearned", unlearned)):
        results = evaluate(model, tasks, batch_size=batch_size, limit=limit)["results"]
        scores[name] = {t: float(results[t]["acc,none"]) for t in tasks}
    return benchmark_table(scores["baseline"], scores["unlearned"])


def benchmark_table(baseline: dict[str, float], unlearned: dict[str, float]) -> pd.DataFrame:
    """The before/after table from two ``{task: accuracy}`` dicts (same tasks)."""
    if set(baseline) != set(unlearned):
        raise ValueError(f"the two models were measured on different tasks: {sorted(baseline)} vs {sorted(unlearned)}")
    rows = [{"benchmark": t, "baseline": baseline[t], "unlearned": unlearned[t],
             "change": unlearned[t] - baseline[t],
             "paper baseline": PAPER_RESULTS.get(t, (None, None))[0],
             "paper unlearned": PAPER_RESULTS.get(t, (None, None))[1]} for t in baseline]
    return pd.DataFrame(rows)


def table_markdown(table: pd.DataFrame) -> str:
    """The before/after table as Markdown, accuracies to three decimals."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [row[c] if isinstance(row[c], str) else ("" if pd.isna(row[c]) else f"{row[c]:+.3f}" if c == "change"
                                                         else f"{row[c]:.3f}") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unlearned_model_dir(run) -> Path:
    """The directory of the run's unlearned model: the recipe notebook 05 carried
    forward, as merged full weights (LoRA) or the full model."""
    best = run.read_json("finetune/summary.json")["best"]
    for name in (f"finetune/{best}/merged", f"finetune/{best}/model"):
        if run.exists(name):
            return run.path(name)
    return run.require(f"finetune/{best}/merged")


def benchmark_run(run, tasks: Sequence[str] = PAPER_TASKS, limit: int | None = None) -> pd.DataFrame:
    """The paper's table for a finished run (after notebook 06): baseline vs the
    unlearned model; written to ``evaluate/lm_eval.csv`` and ``evaluate/lm_eval.md``."""
    baseline = run.read_json("config/baseline.json")["model"]
    table = paper_benchmarks(baseline, unlearned_model_dir(run), tasks=tasks, limit=limit)
    run.write_table("evaluate/lm_eval.csv", table)
    run.write_text("evaluate/lm_eval.md", table_markdown(table) + "\n")
    return table
