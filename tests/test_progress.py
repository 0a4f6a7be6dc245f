"""What a learner sees while a cell works: a bar where a person watches, one plain
line per piece of work in a batch run, nothing with ``progress=False``; training
shows its steps and loss, never the Trainer's dicts."""
import re

import pytest

from conftest import make_tiny_model
from nbsupport import corpus, progress, training

TEXT = "The old wizard walked to the castle and opened the great door. " * 20


@pytest.fixture
def batch_run(monkeypatch):
    monkeypatch.setenv("NBSUPPORT_PROGRESS", "0")     # what the runner sets for its kernels


def test_a_batch_run_prints_one_line_per_piece_of_work(batch_run, capsys):
    assert list(progress.bar(range(7), "scoring probes", unit="batches")) == list(range(7))
    out = capsys.readouterr().out
    assert re.fullmatch(r"scoring probes: 7/7 batches in \d+ s\n", out), out


def test_the_line_shows_the_first_and_last_value_of_what_it_follows(batch_run, capsys):
    shown = progress.open_bar("training", 3, unit="steps")
    for loss in ("3.100", "2.500", "2.000"):
        shown.update()
        shown.set_postfix(loss=loss)
    shown.close()
    shown.close()                                      # closing twice prints once
    assert re.fullmatch(r"training: 3/3 steps in \d+ s, loss 3.100 -> 2.000\n", capsys.readouterr().out)


def test_an_interrupted_loop_still_says_how_far_it_got(batch_run, capsys):
    with pytest.raises(RuntimeError):
        for i in progress.bar(range(5), "generating"):
            if i == 2:
                raise RuntimeError("stop")
    assert capsys.readouterr().out.startswith("generating: 2/5 in ")


def test_progress_false_prints_nothing_anywhere(monkeypatch, capsys):
    for env in ("0", "1"):
        monkeypatch.setenv("NBSUPPORT_PROGRESS", env)
        assert list(progress.bar([1, 2], "quiet", progress=False)) == [1, 2]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_where_a_person_watches_the_bar_is_tqdms(monkeypatch, capsys):
    monkeypatch.delenv("NBSUPPORT_PROGRESS", raising=False)
    shown = progress.open_bar("judging", 2)
    assert not isinstance(shown, progress.Lines)
    shown.update(2)
    shown.close()
    assert "judging" in capsys.readouterr().err


def test_training_shows_steps_and_loss_and_no_dict_of_numbers(batch_run, tmp_path, tiny_tokenizer, capsys):
    blocks = corpus.make_blocks(TEXT, tiny_tokenizer, 16)
    settings = training.TrainSettings(batch_size=4, max_steps=3, save_steps=3, lora_r=2, logging_steps=1)
    model = training.attach_lora(make_tiny_model(len(tiny_tokenizer)), settings)
    trainer = training.train(model, training.BlockDataset(blocks), tmp_path, settings, desc="training R")
    out = capsys.readouterr().out
    first, last = trainer.state.log_history[0]["loss"], trainer.state.log_history[2]["loss"]
    assert re.fullmatch(rf"training R: 3/3 steps in \d+ s, loss {first:.3f} -> {last:.3f}\n", out), out
    assert "{" not in out and "'loss'" not in out
