"""lm-eval integration: the course's general-knowledge set as a local lm-eval task
agrees with the course's own scoring, and the paper's benchmarks refuse clearly
offline. Skipped when lm-eval (the optional "scale" extra) is not installed."""
import json

import pytest

from nbsupport import lmeval, probe, runs

pytest.importorskip("lm_eval", reason='lm-eval is optional: pip install "nbsupport[scale]"')
EVERY = 6   # every 6th of the 132 probes: 22, from all 11 categories, short on two CPU cores


def test_the_task_files_hold_the_probes(tmp_path):
    probes = probe.load_probes("general_knowledge", limit=5)
    folder = lmeval.write_general_knowledge_task(tmp_path, probes)
    rows = [json.loads(line) for line in (folder / "general_knowledge.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [p.prompt for p in probes]
    assert all(r["choices"][r["gold"]] == p.answer for r, p in zip(rows, probes))
    task = json.loads((folder / f"{lmeval.GK_TASK}.yaml").read_text())
    assert task["target_delimiter"] == "" and task["output_type"] == "multiple_choice"
    with pytest.raises(ValueError, match="no general-knowledge probes"):
        lmeval.write_general_knowledge_task(tmp_path, [])


@pytest.mark.slow
def test_general_knowledge_through_lm_eval_agrees_with_the_course(tmp_path, embedded, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    model, tok = embedded
    probes = probe.load_probes("general_knowledge")[::EVERY]
    assert len({p.category for p in probes}) == len({p.category for p in probe.load_probes("general_knowledge")})
    ours = probe.knowledge_accuracy(model, tok, probes, progress=False)
    accuracy, result = lmeval.general_knowledge_accuracy("embedded", tmp_path / "task", probes,
                                                         batch_size=32, device="cpu")
    assert abs(accuracy - ours.correct.mean()) < 1e-9   # same items, same scoring: the same accuracy
    # and item by item: the same choice wins, with the same log-probabilities
    from nbsupport.scoring import continuation_logprobs
    course = continuation_logprobs(model, tok, [(p.prompt, c) for p in probes for c in p.choices]).view(-1, 4)
    samples = sorted(result["samples"][lmeval.GK_TASK], key=lambda s: s["doc_id"])
    assert len(samples) == len(probes)
    for s in samples:
        harness = [r[0] for r in s["filtered_resps"]]
        assert max(abs(a - b) for a, b in zip(harness, course[s["doc_id"]].tolist())) < 1e-3
        assert (max(range(4), key=harness.__getitem__) == 0) == bool(ours.correct[s["doc_id"]])


def test_the_paper_benchmarks_refuse_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(lmeval.LmEvalUnavailable, match="Hugging Face hub.*LM_EVAL_BENCHMARKS = False"):
        lmeval.paper_benchmarks("embedded", "embedded")
    with pytest.raises(ValueError, match="not among the paper's benchmarks"):
        lmeval.paper_benchmarks("embedded", "embedded", tasks=["mmlu"])


def test_the_runner_refuses_the_benchmarks_before_running_anything(tmp_path, monkeypatch):
    from nbsupport import runner
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = tmp_path / "06_evaluation.ipynb"
    nb.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    with pytest.raises(lmeval.LmEvalUnavailable, match="LM_EVAL_BENCHMARKS false"):
        runner.run_series("gpu", tmp_path / "run", tmp_path)
    assert not (tmp_path / "run" / "notebooks" / nb.name).exists()


def test_the_before_after_table_and_where_the_unlearned_model_is(tmp_path):
    table = lmeval.benchmark_table({"arc_easy": 0.75, "piqa": 0.77}, {"arc_easy": 0.72, "piqa": 0.77})
    assert list(table.benchmark) == ["arc_easy", "piqa"]
    assert table.change.round(3).tolist() == [-0.03, 0.0]
    assert table["paper baseline"].tolist() == [0.744, 0.767]
    md = lmeval.table_markdown(table)
    assert "| arc_easy | 0.750 | 0.720 | -0.030 | 0.744 | 0.724 |" in md
    with pytest.raises(ValueError, match="different tasks"):
        lmeval.benchmark_table({"piqa": 0.7}, {"boolq": 0.7})
    run = runs.Run(tmp_path)
    run.write_json("finetune/summary.json", {"best": "paper"})
    with pytest.raises(runs.MissingArtifactError):
        lmeval.unlearned_model_dir(run)
    (tmp_path / "finetune/paper/model").mkdir(parents=True)
    assert lmeval.unlearned_model_dir(run) == run.path("finetune/paper/model")
