import json

import pandas as pd
import pytest

from nbsupport import runs


def test_json_round_trip_and_no_temporary_leftovers(tmp_path):
    run = runs.open_run(tmp_path / "r")
    run.write_json("baseline/summary.json", {"a": 1, "path": tmp_path})
    assert run.read_json("baseline/summary.json") == {"a": 1, "path": str(tmp_path)}
    assert [p.name for p in (tmp_path / "r" / "baseline").iterdir()] == ["summary.json"]
    assert (tmp_path / "r" / "baseline" / "summary.json").stat().st_mode & 0o044  # readable by others


def test_a_failed_write_keeps_the_old_file(tmp_path):
    run = runs.Run(tmp_path)
    run.write_json("x.json", {"v": 1})
    with pytest.raises(TypeError):
        run.write_json("x.json", {"v": object()})  # not serialisable: fails mid-write
    assert run.read_json("x.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    run = runs.Run(tmp_path)
    with pytest.raises(RuntimeError):
        with run.atomic_dir("model") as tmp:
            (tmp / "part.bin").write_bytes(b"1")
            raise RuntimeError("crash while saving")
    assert list(tmp_path.iterdir()) == []
    with run.atomic_dir("model") as tmp:
        (tmp / "weights.bin").write_bytes(b"2")
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"2"


def test_missing_input_names_the_notebook_to_run(tmp_path):
    run = runs.Run(tmp_path)
    with pytest.raises(runs.MissingArtifactError, match="01_what_does_the_model_know.ipynb"):
        run.require("baseline/summary.json")
    with pytest.raises(runs.MissingArtifactError, match="02_reinforcement"):
        run.read_json("reinforce/summary.json")
    with pytest.raises(runs.MissingArtifactError, match="04_generic_labels"):
        run.read_json("config/labels.json")


def test_run_records_config_and_refuses_another_model(tmp_path):
    cfg = {"profile": "smoke", "model": "embedded", "seed": 0}
    run = runs.open_run(tmp_path, cfg, stage="baseline")
    assert run.read_json("config/baseline.json") == cfg
    assert json.loads((tmp_path / "run.json").read_text())["model"] == "embedded"
    runs.open_run(tmp_path, {**cfg, "seed": 1}, stage="reinforce")  # same model: fine
    with pytest.raises(runs.RunMismatchError, match="new RUN_DIR"):
        runs.open_run(tmp_path, {**cfg, "model": "other/model"}, stage="labels")


def test_tables_round_trip(tmp_path):
    run = runs.Run(tmp_path)
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    run.write_table("t.csv", df)
    pd.testing.assert_frame_equal(run.read_table("t.csv"), df)


# ----------------------------------------------------------------- the run contract
def test_a_later_stage_inherits_what_earlier_stages_fixed(tmp_path):
    runs.open_stage(tmp_path, "smoke", "baseline", model=None)
    runs.open_stage(tmp_path, "smoke", "reinforce", block_size=64, corpus_tokens=512)
    runs.open_stage(tmp_path, "smoke", "anchors")
    run, cfg = runs.open_stage(tmp_path, "smoke", "labels", alpha=2.5)
    assert (cfg.block_size, cfg.corpus_tokens, cfg.alpha) == (64, 512, 2.5)
    # notebook 05 names none of them, yet trains on the same blocks and alpha
    _, ft = runs.open_stage(tmp_path, "cpu", "finetune", finetune_lr=1e-4)
    assert (ft.block_size, ft.alpha, ft.finetune_lr) == (64, 2.5, 1e-4)
    assert run.read_json("config/finetune.json")["alpha"] == 2.5


def test_a_conflicting_value_names_the_notebook_that_fixed_it(tmp_path):
    runs.open_stage(tmp_path, "smoke", "reinforce", block_size=64)
    with pytest.raises(runs.RunMismatchError, match="BLOCK_SIZE=128.*02_reinforcement.ipynb.*BLOCK_SIZE=64"):
        runs.open_stage(tmp_path, "smoke", "labels", block_size=128)
    runs.open_stage(tmp_path, "smoke", "labels", BLOCK_SIZE=64)   # the same value is fine
    with pytest.raises(ValueError, match="unknown stage"):
        runs.open_stage(tmp_path, "smoke", "training")


def test_a_stage_may_change_its_own_and_free_parameters(tmp_path):
    runs.open_stage(tmp_path, "smoke", "labels", alpha=5.0, seed=1)
    _, cfg = runs.open_stage(tmp_path, "smoke", "labels", alpha=10.0, seed=2)   # rerun of the same stage
    assert cfg.alpha == 10.0
    _, cfg = runs.open_stage(tmp_path, "smoke", "evaluate", seed=3, n_token_probes=5)
    assert (cfg.seed, cfg.n_token_probes, cfg.alpha) == (3, 5, 10.0)
