"""Other unlearning methods (ALGORITHM.md section 8): the NPO loss against the
paper's formula, the direction of each method on tiny models, and early stopping."""
import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import make_tiny_model
from nbsupport import config, corpus, methods, models, probe, runs, training

FORGET = "Harry Potter studies magic at a school in the mountains. Ron and Hermione are friends. " * 8
RETAIN = "A cat sat on the mat and the dog slept by the fire. The capital of France is Paris. " * 8


def _blocks(tok, text, n=4):
    return corpus.make_blocks(text, tok, 24)[:n]


def _nll(model, blocks):
    with torch.no_grad():
        return model(input_ids=blocks, labels=blocks).loss.item()


def _settings(steps, lr=1e-2, **kw):
    return training.TrainSettings(learning_rate=lr, batch_size=2, max_steps=steps, lora_r=4, save_steps=100, **kw)


def _batch(forget, retain):
    dataset = methods.LabelDataset(forget, forget, retain=retain)
    return {k: torch.stack([dataset[i][k] for i in range(len(forget))]) for k in dataset[0]}


def test_npo_loss_is_the_papers_formula():
    logp_theta = torch.tensor([-40.0, -55.5, -60.0, -10.0], dtype=torch.float64)
    logp_ref = torch.tensor([-42.0, -50.0, -60.0, -30.0], dtype=torch.float64)
    for beta in (0.1, 0.5, 1.0):
        ratio = torch.exp(logp_theta) / torch.exp(logp_ref)
        direct = (2 / beta) * torch.log(1 + ratio ** beta)
        assert torch.allclose(methods.npo_loss(logp_theta, logp_ref, beta), direct, rtol=1e-10)
    # at theta = ref it is (2/beta) log 2; it falls towards 0 as the model forgets
    assert methods.npo_loss(torch.tensor([-7.0]), torch.tensor([-7.0]), 0.1).item() == pytest.approx(20 * math.log(2))
    far = methods.npo_loss(torch.tensor([-5000.0, 5000.0]), torch.tensor([0.0, 0.0]), 0.1)
    assert far[0].item() == pytest.approx(0.0, abs=1e-12) and math.isfinite(far[1].item())
    with pytest.raises(ValueError, match="beta"):
        methods.npo_loss(logp_theta, logp_ref, 0.0)


def test_sequence_logprobs_sum_the_next_token_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[1, 3] = -100
    got = methods.sequence_logprobs(logits, labels)
    logp = torch.log_softmax(logits, -1)
    want = [sum(logp[b, t, labels[b, t + 1]] for t in range(4) if labels[b, t + 1] != -100) for b in range(2)]
    assert torch.allclose(got, torch.stack(want), atol=1e-5)


def test_npo_trainer_loss_at_the_start_and_against_a_direct_computation(tiny_tokenizer):
    tok = tiny_tokenizer
    forget, retain = _blocks(tok, FORGET, 3), _blocks(tok, RETAIN, 2)
    batch = _batch(forget, retain)
    cls = methods.make_trainer_class("npo", beta=0.1)
    fresh = get_peft_model(make_tiny_model(len(tok), seed=1), LoraConfig(r=4, target_modules="all-linear"))
    # a fresh adapter is B itself: the loss sits exactly at its bound (2/beta) log 2
    assert cls.compute_loss(cls.__new__(cls), fresh, dict(batch)).item() == pytest.approx(20 * math.log(2), rel=1e-5)
    moved = get_peft_model(make_tiny_model(len(tok), seed=1),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    cls = methods.make_trainer_class("npo", beta=0.1, retain_weight=0.5, retain_loss="nll")
    got = cls.compute_loss(cls.__new__(cls), moved, dict(batch)).item()
    with torch.no_grad():
        nll = lambda m, ids: torch.nn.functional.cross_entropy(  # noqa: E731  sum over a block's tokens
            m(input_ids=ids).logits[:, :-1].reshape(-1, len(tok)), ids[:, 1:].reshape(-1), reduction="none"
        ).view(len(ids), -1).sum(-1).double()
        lt = -nll(moved, forget)
        with moved.disable_adapter():
            lr = -nll(moved, forget)
        retain_nll = moved(input_ids=retain, labels=retain).loss.item()
    direct = ((2 / 0.1) * torch.log1p((lt - lr).mul(0.1).exp())).mean().item()
    assert (lt - lr).abs().max() > 0.1
    assert got == pytest.approx(direct + 0.5 * retain_nll, rel=1e-4)


def test_gradient_ascent_raises_the_forget_loss(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    forget = _blocks(tok, FORGET)
    base = make_tiny_model(len(tok), seed=2)
    before = _nll(base, forget)
    model, losses = methods.train_method(base, "ga", forget, None, runs.Run(tmp_path), "ga", _settings(4),
                                         resume=False)
    assert _nll(model, forget) > before + 0.01
    assert losses[0]["loss"] == pytest.approx(-before, rel=1e-3)   # the logged loss is -NLL
    assert json.loads((tmp_path / "ga/method.json").read_text())["method"] == "ga"
    assert (tmp_path / "ga/adapter/adapter_config.json").is_file()


def test_gradient_difference_keeps_the_retain_loss_lower_than_ga(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    forget, retain = _blocks(tok, FORGET), _blocks(tok, RETAIN)
    run = runs.Run(tmp_path)
    ga, _ = methods.train_method(make_tiny_model(len(tok), seed=2), "ga", forget, retain, run, "ga",
                                 _settings(6, 3e-2), resume=False)
    gd, _ = methods.train_method(make_tiny_model(len(tok), seed=2), "graddiff", forget, retain, run, "gd",
                                 _settings(6, 3e-2), resume=False, retain_per_step=2)
    assert _nll(gd, retain) < _nll(ga, retain) - 0.01
    assert _nll(gd, forget) > _nll(make_tiny_model(len(tok), seed=2), forget)


def test_npo_lowers_the_forget_probability_and_checks_its_options(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    forget, retain = _blocks(tok, FORGET), _blocks(tok, RETAIN)
    run = runs.Run(tmp_path)
    before = _nll(make_tiny_model(len(tok), seed=2), forget)
    model, losses = methods.train_method(make_tiny_model(len(tok), seed=2), "npo", forget, retain, run, "npo",
                                         _settings(4), resume=False)
    assert losses[0]["loss"] == pytest.approx(20 * math.log(2), rel=1e-3)   # KL is 0 at the start too
    assert _nll(model, forget) > before
    assert json.loads(run.path("npo/method.json").read_text()) == {
        "method": "npo", "beta": 0.1, "retain_weight": 1.0, "retain_loss": "kl", "retain_per_step": 2}
    with pytest.raises(training.TrainingError, match="another method"):
        methods.train_method(make_tiny_model(len(tok), seed=2), "npo", forget, retain, run, "npo",
                             _settings(4), beta=0.5)
    with pytest.raises(ValueError, match="lora"):
        methods.train_method(make_tiny_model(len(tok)), "npo", forget, retain, run, "x", _settings(2, method="full"))
    with pytest.raises(ValueError, match="retain_blocks"):
        methods.train_method(make_tiny_model(len(tok)), "graddiff", forget, None, run, "x", _settings(2))
    with pytest.raises(TypeError, match="gamma"):
        methods.train_method(make_tiny_model(len(tok)), "npo", forget, retain, run, "x", _settings(2), gamma=1)
    with pytest.raises(ValueError, match="unknown method"):
        methods.method_options("rmu")


def test_best_step_on_hand_made_histories():
    h = [{"step": 0, "familiarity": 0.30, "perplexity": 10.0},
         {"step": 10, "familiarity": 0.10, "perplexity": 10.2},
         {"step": 20, "familiarity": 0.05, "perplexity": 10.3},    # +3.0 %: still allowed
         {"step": 30, "familiarity": 0.01, "perplexity": 12.0}]
    assert methods.best_step(h) == 20
    assert methods.best_step(h, max_perplexity_rise=1.0) == 0
    assert methods.best_step(h, max_perplexity_rise=50) == 30
    tie = h[:2] + [{"step": 20, "familiarity": 0.10, "perplexity": 10.0}]
    assert methods.best_step(tie) == 10
    # perplexity can only rise from step 0 here, and step 0 itself is a NaN elsewhere
    assert methods.best_step([{"step": 0, "familiarity": 0.3, "perplexity": 10.0},
                              {"step": 5, "familiarity": 0.1, "perplexity": float("nan")}]) == 0
    assert methods.best_step([{"step": 0, "familiarity": 0.3, "perplexity": 10.0}], -50) is None
    with pytest.raises(ValueError, match="step-0"):
        methods.best_step(h[1:])


def test_best_adapter_keeps_the_early_stopped_model(tmp_path, tiny_tokenizer, tiny_model_dir):
    tok = tiny_tokenizer
    forget = _blocks(tok, FORGET)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    base, _ = models.load_model(tiny_model_dir, device="cpu")
    keep = methods.BestAdapter(tok, probes, ["The cat sat on the mat."], tmp_path / "ga/best_adapter",
                               max_perplexity_rise=1e6, every=2)
    # a large step size makes GA wander, so the best record is not the last one
    model, _ = methods.train_method(base, "ga", forget, None, runs.Run(tmp_path), "ga", _settings(6, 0.1),
                                    callbacks=[keep], resume=False)
    best = methods.best_step(keep.history, 1e6)
    assert [h["step"] for h in keep.history] == [0, 2, 4, 6] and keep.saved_step == best
    assert best not in (0, 6)
    record = json.loads((tmp_path / "ga/best_adapter/early_stop.json").read_text())
    assert record["step"] == best
    loaded, _ = models.load_model(tiny_model_dir, adapter=tmp_path / "ga/best_adapter", device="cpu")
    again = probe.familiarity_score(probe.token_familiarity(loaded, tok, probes, progress=False))
    assert again == pytest.approx(record["familiarity"], rel=1e-4)
    final = probe.familiarity_score(probe.token_familiarity(model, tok, probes, progress=False))
    assert final == pytest.approx(keep.history[-1]["familiarity"], rel=1e-4)
    assert again != pytest.approx(final, rel=1e-3)


def test_a_shared_start_record_is_not_measured_again(tmp_path, tiny_tokenizer, tiny_model_dir, monkeypatch):
    """Every method starts from B: the first run's step-0 record serves the next, which
    then measures only its later steps and ends where it would have ended anyway."""
    tok = tiny_tokenizer
    forget = _blocks(tok, FORGET)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    texts = ["The cat sat on the mat."]
    first = methods.BestAdapter(tok, probes, texts, tmp_path / "a/best", every=2)
    config.set_seed(0)
    methods.train_method(models.load_model(tiny_model_dir, device="cpu")[0], "ga", forget, None, runs.Run(tmp_path),
                         "a", _settings(4, 0.1), callbacks=[first], resume=False)
    calls = []
    real = probe.token_familiarity
    monkeypatch.setattr(probe, "token_familiarity", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = methods.BestAdapter(tok, probes, texts, tmp_path / "b/best", every=2, start=first.history[0],
                                 path=tmp_path / "b/steps.json")
    config.set_seed(0)
    methods.train_method(models.load_model(tiny_model_dir, device="cpu")[0], "ga", forget, None, runs.Run(tmp_path),
                         "b", _settings(4, 0.1), callbacks=[second], resume=False)
    assert len(calls) == 2 and [h["step"] for h in second.history] == [0, 2, 4]
    assert second.history[0] == first.history[0]
    assert second.history[-1]["familiarity"] == pytest.approx(first.history[-1]["familiarity"], rel=1e-5)
    assert json.loads((tmp_path / "b/steps.json").read_text())[0] == first.history[0]
    with pytest.raises(ValueError, match="familiarity"):
        methods.BestAdapter(tok, probes, texts, tmp_path / "c", start={"step": 0})



def test_training_stops_at_the_first_record_past_the_perplexity_limit(tmp_path, tiny_tokenizer, tiny_model_dir):
    """The early-stopping rule: with stop_past_limit, training ends at the first measured
    step whose perplexity rose past the limit; without it, it runs all its steps."""
    tok = tiny_tokenizer
    forget = _blocks(tok, FORGET)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    texts = ["The cat sat on the mat."]

    def run_ga(name, **kw):
        keep = methods.BestAdapter(tok, probes, texts, tmp_path / f"{name}/best", every=1, **kw)
        config.set_seed(0)
        methods.train_method(models.load_model(tiny_model_dir, device="cpu")[0], "ga", forget, None,
                             runs.Run(tmp_path), name, _settings(6, 0.1), callbacks=[keep], resume=False)
        return keep

    free = run_ga("free", max_perplexity_rise=1e6, stop_past_limit=True)   # a limit never reached
    assert [h["step"] for h in free.history] == list(range(7)) and free.stopped_at is None
    ppl = [h["perplexity"] for h in free.history]
    assert max(ppl[1:]) > ppl[0], "gradient ascent at this rate should raise the perplexity"
    # a limit half way to the highest rise: the first step past it is where training must stop
    rise = 50 * (max(ppl[1:]) / ppl[0] - 1)
    first_past = next(i for i, p in enumerate(ppl) if p > ppl[0] * (1 + rise / 100))
    assert 0 < first_past
    stopped = run_ga("stopped", max_perplexity_rise=rise, stop_past_limit=True)
    assert [h["step"] for h in stopped.history] == list(range(first_past + 1))
    assert [h["perplexity"] for h in stopped.history] == pytest.approx(ppl[:first_past + 1], rel=1e-5)
    assert first_past < 6, "the limit should be passed before the last step"
    assert stopped.stopped_at == first_past
    assert runs.Run(tmp_path).read_json("stopped/trained.json")["global_step"] == first_past
    assert stopped.saved_step == methods.best_step(stopped.history, rise)
    kept = run_ga("kept", max_perplexity_rise=rise)   # the same limit, no stopping: all six steps
    assert [h["step"] for h in kept.history] == list(range(7)) and kept.stopped_at is None
    with pytest.raises(ValueError, match="texts"):
        methods.BestAdapter(tok, probes, [], tmp_path / "none", stop_past_limit=True)


# ----------------------------------------------------------------- notebook 07's loops
def _cfg07(model_dir, **over):
    return config.Config({"model": str(model_dir), "methods": ["ga", "graddiff"], "method_steps": 4, "method_lr": 0.1,
                          "method_batch_size": 2, "lora_r": 4, "lora_alpha": 8, "seed": 0, "cpu_bf16": None,
                          "step_probes": 3, "method_probe_every": 2, "alpha": 5.0, **over})


def test_train_all_is_the_notebooks_loop(tmp_path, tiny_tokenizer, tiny_model_dir):
    from nbsupport.finetune import retain_blocks
    cfg = _cfg07(tiny_model_dir)
    blocks = _blocks(tiny_tokenizer, FORGET)
    run = runs.Run(tmp_path / "all")
    curves, stopped, seconds = methods.train_all(run, cfg, blocks, device="cpu", resume=False)
    assert list(curves) == list(stopped) == list(seconds) == cfg.methods and min(seconds.values()) > 0
    # the loop notebook 07 ran before: the same records, bit for bit
    dev_probes = probe.split(probe.load_probes("hp_token"), "dev")[:cfg.step_probes]
    settings = training.TrainSettings(method="lora", learning_rate=cfg.method_lr, batch_size=cfg.method_batch_size,
                                      max_steps=cfg.method_steps, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                      seed=cfg.seed, save_steps=10**6, cpu_bf16=cfg.cpu_bf16)
    by_hand, step0 = runs.Run(tmp_path / "by_hand"), None
    for method in cfg.methods:
        config.set_seed(cfg.seed)
        model, tok = models.load_model(cfg.model, device="cpu")
        keeper = methods.BestAdapter(tok, dev_probes, corpus.heldout_texts(limit=1),
                                     by_hand.path(f"methods/{method}/best_adapter"), every=cfg.method_probe_every,
                                     path=by_hand.path(f"methods/{method}/steps.json"), start=step0,
                                     stop_past_limit=True)
        methods.train_method(model, method, blocks, retain_blocks(tok, blocks.shape[1]), by_hand, f"methods/{method}",
                             settings, callbacks=[keeper], resume=False)
        assert curves[method] == keeper.history and stopped[method] == methods.best_step(keeper.history)
        step0 = step0 or keeper.history[0]
    assert curves["graddiff"][0] == curves["ga"][0]   # one step-0 measure for all
    for method, step in stopped.items():
        assert run.exists(f"methods/{method}/method.json") and run.exists(f"methods/{method}/steps.json")
        if step is not None:
            assert run.read_json(f"methods/{method}/best_adapter/early_stop.json")["step"] == step


def test_the_early_stops_in_a_line():
    line = methods.early_stop_line({"ga": 4, "npo": None, "graddiff": 0})
    assert line == ("early stop (step with the best forgetting within +3% perplexity): {'ga': 4, "
                    "'npo': 'never within +3%', 'graddiff': 'no step forgot more than the start'}")
    h = [{"step": 0, "familiarity": 0.3, "perplexity": 10.0}, {"step": 2, "familiarity": 0.1, "perplexity": 10.3},
         {"step": 4, "familiarity": 0.05, "perplexity": 10.31}]
    assert methods.best_step(h) == 2   # +3% is the default limit (scoring.PERPLEXITY_LIMIT_PCT)


def test_the_models_notebook_07_compares(tmp_path, tiny_model_dir, monkeypatch):
    run, cfg = runs.Run(tmp_path), _cfg07(tiny_model_dir)
    adapters, loaders = methods.models_to_compare(run, cfg, ["paper", "soft+kl"], {"ga": 2, "npo": 0, "graddiff": None})
    assert adapters == {"baseline": None, "WHP paper": run.path("finetune/paper/adapter"),
                        "WHP soft+kl": run.path("finetune/soft+kl/adapter"), "ga": run.path("methods/ga/best_adapter")}
    assert list(loaders) == [*adapters, "WHP at inference (alpha=5)"] == [*adapters, methods.inference_name(5.0)]
    model, tok = loaders["baseline"]()
    assert not hasattr(model, "peft_config") and len(tok) > 0
    seen = []
    monkeypatch.setattr(methods, "inference_time_whp", lambda *a: seen.append(a) or ("R", "tok"))
    assert loaders["WHP at inference (alpha=5)"]() == ("R", "tok") and seen == [(run, cfg, None)]
