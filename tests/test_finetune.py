"""Finetuning on generic labels (docs/ALGORITHM.md section 5): the losses against
independent computations, the saved formats, the step curve, and resume after an
interruption (with a half-written checkpoint too)."""
import json

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import TrainerCallback

from conftest import make_tiny_model, make_tiny_pair
from nbsupport import corpus, finetune, generic_labels as labels, models, probe, runs, training
from nbsupport.anchors.dictionary import AnchorDict, Entry

DICT = AnchorDict([Entry("Hogwarts", ["the big old school"]), Entry("Harry", ["Jon"]), Entry("Ron", ["Tom"])])
TEXT = ("Harry Potter studies magic at Hogwarts. Ron and Harry fly at night.\nThe owl flew over "
        "the castle and the cat slept. ") * 6


@pytest.fixture(scope="module")
def label_run(tmp_path_factory, tiny_tokenizer):
    tok = tiny_tokenizer
    run = runs.Run(tmp_path_factory.mktemp("ft"))
    blocks = corpus.make_blocks(TEXT, tok, 32)
    labels.generate(make_tiny_pair(len(tok), seed=4), tok, blocks, run, DICT, [5.0], top_k=8, progress=False)
    return run


def _hard_loss(model, data):
    with torch.no_grad():
        return model(input_ids=data.input_ids, labels=data.labels(5)).loss.item()


def test_finetuning_lowers_the_loss_on_generic_labels(label_run, tiny_tokenizer):
    # Full finetuning: a random tiny model's final norm keeps its logits flat, which
    # a LoRA on the inner layers cannot sharpen in a few steps (a real model can).
    data = labels.load(label_run)
    base = make_tiny_model(len(tiny_tokenizer), seed=4)
    before = _hard_loss(base, data)
    settings = training.TrainSettings(method="full", learning_rate=5e-3, batch_size=4, max_steps=30,
                                      save_steps=100)
    U, losses = finetune.finetune(base, data, 5.0, label_run, settings, out="ft-full", resume=False)
    assert _hard_loss(U, data) < before - 1.0
    assert losses[-1]["loss"] < losses[0]["loss"]
    assert (label_run.path("ft-full/model/config.json")).is_file()


def test_lora_result_is_saved_as_adapter_and_merged_weights(label_run, tiny_tokenizer):
    data = labels.load(label_run)
    settings = training.TrainSettings(learning_rate=2e-2, batch_size=4, max_steps=3, lora_r=8, save_steps=100)
    U, _ = finetune.finetune(make_tiny_model(len(tiny_tokenizer), seed=4), data, 5.0, label_run, settings,
                             out="ft-lora", resume=False, tok=tiny_tokenizer)
    assert (label_run.path("ft-lora/adapter/adapter_config.json")).is_file()
    merged, _ = models.load_model(label_run.path("ft-lora/merged"), device="cpu")
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=data.input_ids[:2]).logits,
                              U(input_ids=data.input_ids[:2]).logits, atol=1e-4)
        with U.disable_adapter():
            assert not torch.allclose(merged(input_ids=data.input_ids[:2]).logits,
                                      U(input_ids=data.input_ids[:2]).logits, atol=1e-4)


def test_soft_cross_entropy_against_brute_force():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5, 3))
    vals = torch.randn(2, 5, 3)
    lab = torch.tensor([[-100, 1, 2, -100, 4], [-100, 5, 6, 7, 8]])
    got = finetune.soft_cross_entropy(logits, ids, vals, lab)
    total, n = 0.0, 0
    for b in range(2):
        for t in range(4):
            if lab[b, t + 1] == -100:
                continue
            target = torch.softmax(vals[b, t + 1], -1)
            logp = torch.log_softmax(logits[b, t], -1)
            total += -(target * logp[ids[b, t + 1]]).sum().item()
            n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    # a one-hot soft target is the hard cross-entropy
    onehot_vals = torch.zeros(2, 5, 3)
    onehot_vals[..., 0] = 1e4
    hard_lab = torch.where(lab == -100, lab, ids[..., 0])
    hard = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), hard_lab[:, 1:].reshape(-1))
    assert finetune.soft_cross_entropy(logits, ids, onehot_vals, lab).item() == pytest.approx(hard.item(), rel=1e-4)



def _retain(tok):
    return torch.tensor(tok("The cat sat on the mat and the dog slept by the fire. " * 8,
                            add_special_tokens=False)["input_ids"][:64]).view(2, 32)


def test_soft_targets_with_kl_train_and_record_steps(label_run, tiny_tokenizer):
    data = labels.load(label_run)
    tok = tiny_tokenizer
    retain = _retain(tok)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    steps = finetune.StepProbe(tok, probes, ["The cat sat on the mat."], every=3)
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=6, lora_r=4, save_steps=100)
    U, losses = finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings,
                                  targets="soft", kl_weight=1.0, retain=retain, out="ft-soft",
                                  callbacks=[steps], resume=False, save_merged=False)
    assert [h["step"] for h in steps.history] == [0, 3, 6]
    # the curve is measured with the course's instrument: its last point is the final model's measure
    final = probe.familiarity_score(probe.token_familiarity(U, tok, probes, progress=False))
    assert steps.history[-1]["familiarity"] == pytest.approx(final, rel=1e-5)
    assert steps.history[0]["familiarity"] != pytest.approx(final, rel=1e-3)
    assert finetune.kl_retain(U, retain).item() > 0
    with pytest.raises(ValueError, match="retain"):
        finetune.finetune(make_tiny_model(len(tok)), data, 5.0, label_run, settings, targets="soft", kl_weight=1.0)
    with pytest.raises(KeyError, match="alpha=7"):
        finetune.finetune(make_tiny_model(len(tok)), data, 7.0, label_run, settings)


def test_soft_kl_loss_is_soft_cross_entropy_plus_the_kl_term(label_run, tiny_tokenizer):
    """The Trainer's loss against an independent computation: it would fail if the
    KL term, its weight or the soft targets were dropped or swapped."""
    data = labels.load(label_run)
    retain = _retain(tiny_tokenizer)
    model = get_peft_model(make_tiny_model(len(tiny_tokenizer), seed=4),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    dataset = finetune.LabelDataset(data.input_ids, data.labels(5), *data.soft(5), retain)
    batch = {k: torch.stack([dataset[i][k] for i in range(3)]) for k in dataset[0]}
    trainer = finetune.make_trainer_class("soft", 0.5).__new__(finetune.make_trainer_class("soft", 0.5))
    got = finetune.make_trainer_class("soft", 0.5).compute_loss(trainer, model, dict(batch))
    # independent: soft CE written out position by position, KL(P_B || P_U) from two explicit passes
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
        with model.disable_adapter():
            base_retain = model(input_ids=batch["retain_ids"][:finetune.KL_BLOCKS_PER_STEP]).logits
        tuned_retain = model(input_ids=batch["retain_ids"][:finetune.KL_BLOCKS_PER_STEP]).logits
    ce, n = 0.0, 0
    for b in range(3):
        for t in range(logits.shape[1] - 1):
            if batch["labels"][b, t + 1] == -100:
                continue
            target = torch.softmax(batch["topk_values"][b, t + 1], -1)
            ce -= (target * torch.log_softmax(logits[b, t], -1)[batch["topk_ids"][b, t + 1]]).sum().item()
            n += 1
    p_b = torch.softmax(base_retain, -1)
    kl = (p_b * (torch.log_softmax(base_retain, -1) - torch.log_softmax(tuned_retain, -1))).sum(-1).mean().item()
    assert kl > 1e-4 and n > 10
    assert got.item() == pytest.approx(ce / n + 0.5 * kl, rel=1e-4)
    assert got.item() != pytest.approx(ce / n, rel=1e-3)


class _Interrupt(Exception):
    pass


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_save = True  # the checkpoint at this step is written first

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise _Interrupt


def _train_soft(run, data, tok, out, steps, callbacks=(), resume=True):
    training_settings = training.TrainSettings(learning_rate=1e-2, batch_size=2, max_steps=steps, lora_r=4,
                                               save_steps=100, seed=3)
    torch.manual_seed(0)
    return finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, run, training_settings, targets="soft",
                             kl_weight=1.0, retain=_retain(tok), out=out, callbacks=callbacks, resume=resume,
                             save_merged=False)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora" in k}


def test_an_interrupted_run_resumes_to_the_same_model_and_step_numbers(label_run, tiny_tokenizer):
    tok, data = tiny_tokenizer, labels.load(label_run)
    probes = [probe.TokenProbe("a", "Harry Potter studies", (" magic",), (" the",))]
    straight, _ = _train_soft(label_run, data, tok, "ft-straight", 6, resume=False)
    # interrupted right after the checkpoint of step 3, then resumed in a "new process"
    curve = label_run.path("ft-resumed/steps.json")
    first = finetune.StepProbe(tok, probes, ["The cat sat on the mat."], every=2, path=curve)
    with pytest.raises(_Interrupt):
        _train_soft(label_run, data, tok, "ft-resumed", 6, callbacks=[first, _StopAt(3)])
    assert training.last_complete_checkpoint(label_run.path("ft-resumed/checkpoints")).endswith("checkpoint-3")
    second = finetune.StepProbe(tok, probes, ["The cat sat on the mat."], every=2, path=curve)
    resumed, _ = _train_soft(label_run, data, tok, "ft-resumed", 6, callbacks=[second])
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # the curve continues: step 3 is where the resumed run started, never labelled step 0 again
    assert [h["step"] for h in second.history] == [0, 2, 3, 4, 6]
    assert json.loads(curve.read_text()) == second.history


def test_a_half_written_checkpoint_is_skipped(label_run, tiny_tokenizer):
    tok, data = tiny_tokenizer, labels.load(label_run)
    straight, _ = _train_soft(label_run, data, tok, "ft-straight2", 6, resume=False)
    with pytest.raises(_Interrupt):
        _train_soft(label_run, data, tok, "ft-half", 6, callbacks=[_StopAt(3)])
    # a later checkpoint whose writing was cut off: weights there, no trainer state
    half = label_run.path("ft-half/checkpoints/checkpoint-5")
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    assert training.last_complete_checkpoint(half.parent).endswith("checkpoint-3")
    resumed, _ = _train_soft(label_run, data, tok, "ft-half", 6)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_kl_is_zero_for_an_untrained_adapter(tiny_tokenizer):
    model = get_peft_model(make_tiny_model(len(tiny_tokenizer)), LoraConfig(r=4, target_modules=["q_proj"]))
    ids = torch.randint(0, len(tiny_tokenizer), (2, 16))
    assert finetune.kl_retain(model, ids).item() == pytest.approx(0.0, abs=1e-6)


def test_the_recipe_is_chosen_by_measurement_within_the_cost_limit():
    def hist(fam, ppl):
        return [{"step": 0, "familiarity": 0.1, "perplexity": 20.0}, {"step": 9, "familiarity": fam, "perplexity": ppl}]

    # "b" forgets most but costs 10% perplexity: "c" is the best within +3%
    histories = {"a": hist(0.05, 20.2), "b": hist(0.01, 22.0), "c": hist(0.03, 20.5)}
    assert finetune.choose_recipe(histories) == "c"
    assert finetune.choose_recipe(histories, max_perplexity_rise=20) == "b"
    # none within the limit: the cheapest
    assert finetune.choose_recipe({"b": hist(0.01, 22.0), "d": hist(0.02, 21.0)}) == "d"
    assert "rose least" in finetune.recipe_choice({"b": hist(0.01, 22.0), "d": hist(0.02, 21.0)})[1]
    assert "at most 3%" in finetune.recipe_choice(histories)[1]
    assert finetune.recipe_choice({"b": hist(0.01, 22.0)}) == ("b", "the only recipe trained")
    with pytest.raises(ValueError, match="no recipe"):
        finetune.choose_recipe({})


def test_a_finished_finetune_is_reused_only_from_the_same_labels(label_run, tiny_tokenizer, capsys):
    """Finished trainings are keyed on their inputs: after the labels change (notebook 04
    rerun with another dictionary or R), the old adapter is not loaded as if current."""
    data = labels.load(label_run)
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=2, lora_r=4, save_steps=100)
    tok = tiny_tokenizer
    finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings, out="ft-keyed",
                      save_merged=False)
    first = label_run.read_json("ft-keyed/inputs.json")
    capsys.readouterr()
    finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings, out="ft-keyed",
                      save_merged=False)
    assert "training already finished" in capsys.readouterr().out          # same inputs: reused
    changed = labels.GenericLabels(data.input_ids, {5.0: data.labels(5).roll(1, dims=1)},
                                   data.topk_ids, data.topk_values)
    finetune.finetune(make_tiny_model(len(tok), seed=4), changed, 5.0, label_run, settings, out="ft-keyed",
                      save_merged=False)
    out = capsys.readouterr().out
    assert "made from another labels: training again" in out and "already finished" not in out
    assert label_run.read_json("ft-keyed/inputs.json")["labels"] != first["labels"]
    # the soft recipe with its retain text is another set of inputs again
    finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings, out="ft-keyed",
                      targets="soft", kl_weight=1.0, retain=_retain(tok), save_merged=False)
    assert {"labels", "recipe", "retain"} <= set(label_run.read_json("ft-keyed/inputs.json"))
    assert "training again" in capsys.readouterr().out


def test_a_training_from_before_inputs_were_recorded_is_stale(tmp_path):
    run = runs.Run(tmp_path)
    assert training.stale_inputs(run, "x", {"blocks": "a"}) == []              # nothing there yet
    run.write_json("x/trained.json", {"settings": {}, "global_step": 1})
    assert training.stale_inputs(run, "x", {"blocks": "a"}) == ["blocks"]      # trained, inputs unknown
    run.write_json("x/inputs.json", {"blocks": "a"})
    assert training.stale_inputs(run, "x", {"blocks": "a"}) == []
    assert training.stale_inputs(run, "x", {"blocks": "b", "retain": "c"}) == ["blocks", "retain"]


def _excess_by_hand(logp_b, ids, vals):
    """KL(q || P_B) - KL(q_B || P_B) for one position, written out with explicit sums."""
    q = torch.softmax(vals, -1)
    kl = sum(q[j] * (torch.log(q[j]) - logp_b[ids[j]]) for j in range(len(ids)))
    p_b = logp_b.exp()
    own = p_b.topk(len(ids)).indices
    q_b = p_b[own] / p_b[own].sum()
    kl_own = sum(q_b[j] * (torch.log(q_b[j]) - logp_b[own[j]]) for j in range(len(own)))
    return float(kl - kl_own)


def test_selective_loss_against_brute_force():
    torch.manual_seed(1)
    b, L, V, k = 2, 6, 13, 4
    logits, base = torch.randn(b, L, V), torch.randn(b, L, V)
    ids = torch.stack([torch.randperm(V)[:k] for _ in range(b * L)]).view(b, L, k)
    vals = 3 * torch.randn(b, L, k)
    lab = torch.tensor([[-100, 1, 2, -100, 4, 5], [-100, 5, 6, 7, 8, 9]])
    excess = {}
    for i in range(b):
        for t in range(L - 1):
            if lab[i, t + 1] != -100:
                excess[i, t] = _excess_by_hand(torch.log_softmax(base[i, t], -1), ids[i, t + 1], vals[i, t + 1])
    threshold = sorted(excess.values())[len(excess) // 2]        # about half on each side
    forget = [key for key, e in excess.items() if e > threshold]
    keep = [key for key, e in excess.items() if e <= threshold]
    assert forget and keep
    ce = [-(torch.softmax(vals[i, t + 1], -1) * torch.log_softmax(logits[i, t], -1)[ids[i, t + 1]]).sum().item()
          for i, t in forget]
    kl = [(torch.softmax(base[i, t], -1) * (torch.log_softmax(base[i, t], -1)
                                            - torch.log_softmax(logits[i, t], -1))).sum().item() for i, t in keep]
    want = sum(ce) / len(ce) + sum(kl) / len(kl)
    got = finetune.selective_loss(logits, base, ids, vals, lab, threshold)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # every position above a threshold below all: the plain soft cross-entropy
    everywhere = finetune.selective_loss(logits, base, ids, vals, lab, min(excess.values()) - 1)
    assert everywhere.item() == pytest.approx(finetune.soft_cross_entropy(logits, ids, vals, lab).item(), rel=1e-5)
    # none above: only the KL to B, which is 0 for the model that is B
    assert finetune.selective_loss(base, base, ids, vals, lab, max(excess.values()) + 1).item() == pytest.approx(
        0.0, abs=1e-6)


def test_a_target_equal_to_b_truncated_has_no_excess_divergence():
    from nbsupport.label_signal import excess_divergence

    torch.manual_seed(2)
    v_b = torch.randn(5, 40)
    logp_b = torch.log_softmax(v_b, -1)
    values, ids = v_b.topk(6, dim=-1)                      # B's own top 6: its truncated prediction
    assert torch.allclose(excess_divergence(logp_b, ids, values), torch.zeros(5), atol=1e-5)
    flipped = excess_divergence(logp_b, ids, values.flip(-1))   # the same tokens, B's order reversed
    assert (flipped > 0.1).all()


def test_selective_training_runs_and_needs_soft_targets_and_lora(label_run, tiny_tokenizer):
    data = labels.load(label_run)
    tok = tiny_tokenizer
    settings = training.TrainSettings(learning_rate=1e-2, batch_size=4, max_steps=3, lora_r=4, save_steps=100)
    U, losses = finetune.finetune(make_tiny_model(len(tok), seed=4), data, 5.0, label_run, settings,
                                  targets="soft", kl_weight=1.0, retain=_retain(tok), out="ft-select",
                                  resume=False, save_merged=False, select=0.0)
    assert len(losses) == 3 and all(h["loss"] > 0 for h in losses)
    assert "select=0" in json.loads(label_run.path("ft-select/inputs.json").read_text())["recipe"]
    with pytest.raises(ValueError, match="soft targets"):
        finetune.make_trainer_class("hard", 0.0, select=0.5)
    full = training.TrainSettings(method="full", learning_rate=1e-2, batch_size=4, max_steps=1, save_steps=100)
    with pytest.raises(ValueError, match="lora"):
        finetune.finetune(make_tiny_model(len(tok)), data, 5.0, label_run, full, targets="soft", select=0.5)
