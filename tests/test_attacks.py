"""Is it really gone? (ALGORITHM.md sections 7-8): relearning on tiny models, the
in-context primer, Min-K% and its AUC on hand-made cases, the recovery share."""
import math
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import LoraConfig, get_peft_model

from conftest import make_tiny_model
from nbsupport import attacks, models, plots, probe, scoring, training

OWL = probe.TokenProbe("owl-001", "The owl flew over the", (" castle",), (" mat",))
CAT = probe.TokenProbe("cat-002", "A cat sat on the", (" mat",), (" fire",))


def test_probe_groups_split_odd_and_even_ids():
    probes = probe.load_probes("hp_token")
    groups = attacks.probe_groups(probes)
    assert [p.id for p in groups["A"]][:3] == ["hp-tok-001", "hp-tok-003", "hp-tok-005"]
    assert [p.id for p in groups["B"]][:3] == ["hp-tok-002", "hp-tok-004", "hp-tok-006"]
    assert len(groups["A"]) + len(groups["B"]) == len(probes)
    with pytest.raises(ValueError, match="numeric"):
        attacks.probe_groups([probe.TokenProbe("owl", "x", (" a",), (" b",))])
    assert "Hogwarts" in attacks.relearn_text()


def _familiarity(model, tok, probes):
    return probe.familiarity_score(probe.token_familiarity(model, tok, probes, progress=False))


def test_relearning_a_repeated_sentence_raises_its_probability_on_a_copy(tiny_tokenizer):
    tok = tiny_tokenizer
    model = make_tiny_model(len(tok), seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = training.TrainSettings(learning_rate=2e-2, batch_size=2, lora_r=4, save_steps=10**9, seed=0)
    table = attacks.relearn(model, tok, "The owl flew over the castle at night. " * 30, steps=(0, 3, 8),
                            groups={"A": [OWL], "B": [CAT]}, settings=settings, block_size=16)
    assert list(table.index) == [0, 3, 8] and list(table.columns) == ["A", "B"]
    assert table.loc[8, "A"] > table.loc[3, "A"] > table.loc[0, "A"]
    assert table.loc[0, "A"] == pytest.approx(_familiarity(model, tok, [OWL]), rel=1e-5)
    # the model given was copied, never trained
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_known_start_is_not_measured_again_and_changes_nothing_else(tiny_tokenizer, monkeypatch):
    tok = tiny_tokenizer
    model = make_tiny_model(len(tok), seed=3)
    settings = training.TrainSettings(learning_rate=2e-2, batch_size=2, lora_r=4, save_steps=10**9, seed=0)
    text, groups = "The owl flew over the castle at night. " * 30, {"A": [OWL], "B": [CAT]}
    full = attacks.relearn(model, tok, text, steps=(0, 3), groups=groups, settings=settings, block_size=16)
    table = probe.token_familiarity(model, tok, [CAT, OWL], progress=False)      # a larger set, another order
    start = {g: attacks.familiarity_of(table, ps) for g, ps in groups.items()}
    assert start == pytest.approx(full.loc[0].to_dict(), rel=1e-5)
    calls = []
    real = probe.token_familiarity
    monkeypatch.setattr(probe, "token_familiarity", lambda *a, **k: calls.append(1) or real(*a, **k))
    reused = attacks.relearn(model, tok, text, steps=(0, 3), groups=groups, settings=settings, block_size=16,
                             start=start)
    assert len(calls) == 1                                  # step 3 only
    assert reused.loc[0].to_dict() == start
    assert reused.loc[3].to_dict() == pytest.approx(full.loc[3].to_dict(), rel=1e-5)
    with pytest.raises(ValueError, match="one familiarity per group"):
        attacks.relearn(model, tok, text, steps=(0,), groups=groups, start={"A": 0.1})
    with pytest.raises(ValueError, match="does not hold"):
        attacks.familiarity_of(table[table["id"] == OWL.id], [OWL, CAT])


def test_the_default_attacker_finetunes_every_weight_and_keeps_no_checkpoint(tiny_tokenizer, monkeypatch):
    tok = tiny_tokenizer
    model = make_tiny_model(len(tok), seed=3)
    seen = {}
    real_train = attacks.train

    def spy(m, dataset, scratch, settings, **kw):
        trainer = real_train(m, dataset, scratch, settings, **kw)
        seen.update(settings=settings, files=[p.name for p in Path(scratch).iterdir()],
                    trainable=sum(p.numel() for p in m.parameters() if p.requires_grad),
                    total=sum(p.numel() for p in m.parameters()))
        return trainer

    monkeypatch.setattr(attacks, "train", spy)
    table = attacks.relearn(model, tok, "The owl flew over the castle at night. " * 30, steps=(0, 2),
                            groups=[OWL], block_size=16)
    assert list(table.index) == [0, 2] and table.loc[2, "all"] != table.loc[0, "all"]
    assert seen["settings"].method == "full" and seen["trainable"] == seen["total"]
    assert not any(f.startswith("checkpoint-") for f in seen["files"]), seen["files"]


def test_relearn_loads_an_adapter_directory_and_measures_step_zero(tmp_path, tiny_tokenizer, tiny_model_dir):
    base, tok = models.load_model(tiny_model_dir, device="cpu")
    unlearned = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    unlearned.save_pretrained(tmp_path / "adapter")
    table = attacks.relearn(tmp_path / "adapter", None, "unused", steps=(0,), groups=[OWL, CAT])
    assert list(table.columns) == ["all"]
    assert table.loc[0, "all"] == pytest.approx(_familiarity(unlearned, tok, [OWL, CAT]), rel=1e-4)
    with pytest.raises(ValueError, match="groups"):
        attacks.relearn(unlearned, tok, "unused", steps=(0,))


def test_the_primer_changes_the_prompts_and_the_probabilities(tiny_tokenizer, tiny_model):
    primed = attacks.with_primer([OWL, CAT], "Night birds live in old towers.")
    assert [p.prompt for p in primed] == ["Night birds live in old towers.\n\nThe owl flew over the",
                                          "Night birds live in old towers.\n\nA cat sat on the"]
    assert [(p.id, p.target, p.generic) for p in primed] == [(p.id, p.target, p.generic) for p in (OWL, CAT)]
    plain = probe.token_familiarity(tiny_model, tiny_tokenizer, [OWL, CAT], progress=False)["p_target"]
    after = probe.token_familiarity(tiny_model, tiny_tokenizer, primed, progress=False)["p_target"]
    assert all(abs(a - b) > 1e-6 for a, b in zip(plain, after))
    assert attacks.with_primer([OWL])[0].prompt.startswith(attacks.load_primer())


def test_the_builtin_primer_gives_no_answer_away():
    primer = attacks.load_primer()
    assert 200 < len(primer) < 1000
    flat = " ".join(re.findall(r"[\w'-]+", primer.lower()))
    for p in probe.load_probes("hp_token"):
        for t in p.target:
            assert not re.search(rf"\b{re.escape(t.strip())}\b", primer, re.IGNORECASE), (p.id, t)
        words = re.findall(r"[\w'-]+", p.prompt.lower())
        for i in range(len(words) - 5):
            assert f" {' '.join(words[i:i + 6])} " not in f" {flat} ", p.id


def test_min_k_on_hand_made_logprobs():
    lp = torch.tensor([-1.0, -5.0, -2.0, -4.0, -3.0])
    assert attacks.min_k(lp, 0.4) == pytest.approx(-4.5)
    assert attacks.min_k(lp, 0.01) == pytest.approx(-5.0)     # at least one token
    assert attacks.min_k(lp, 0.5) == pytest.approx(-4.0)      # ceil(2.5) = 3 tokens
    assert attacks.min_k(lp, 1.0) == pytest.approx(-3.0)      # all: the mean log-prob
    with pytest.raises(ValueError):
        attacks.min_k(lp, 0.0)


def test_min_k_scores_use_the_tokens_perplexity_scores(tiny_tokenizer, tiny_model):
    texts = ["The owl flew over the castle at night.", "A cat sat on the mat and the dog slept by the fire."]
    for text in texts:
        lp = attacks.token_logprobs(tiny_model, tiny_tokenizer, text, block_size=5)
        assert math.exp(-lp.double().mean().item()) == pytest.approx(
            scoring.perplexity(tiny_model, tiny_tokenizer, [text], block_size=5), rel=1e-5)
    scores = attacks.min_k_scores(tiny_model, tiny_tokenizer, texts, k=0.2)
    assert scores[0] == pytest.approx(attacks.min_k(attacks.token_logprobs(tiny_model, tiny_tokenizer, texts[0]), 0.2))
    assert all(s < attacks.min_k(attacks.token_logprobs(tiny_model, tiny_tokenizer, t), 1.0)
               for s, t in zip(scores, texts))


def _brute_auc(m, n):
    return sum((a > b) + 0.5 * (a == b) for a in m for b in n) / (len(m) * len(n))


def test_membership_auc_on_hand_cases():
    assert attacks.membership_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert attacks.membership_auc([0, 1], [2, 3, 4]) == 0.0
    assert attacks.membership_auc([1, 1, 1], [1, 1]) == 0.5          # all ties: no signal
    assert attacks.membership_auc([2, 1], [1, 0]) == pytest.approx(0.875)
    m, n = [0.3, -1.2, 0.3, 2.0, 0.1], [0.3, -0.5, 0.0, -1.2]
    assert attacks.membership_auc(m, n) == pytest.approx(_brute_auc(m, n))
    with pytest.raises(ValueError):
        attacks.membership_auc([], [1.0])


def test_recovery_share():
    assert attacks.recovery_share(0.1, 0.4) == pytest.approx(25.0)
    assert list(attacks.recovery_share(pd.Series([0.0, 0.2]), 0.4)) == pytest.approx([0.0, 50.0])
    with pytest.raises(ValueError, match="above 0"):
        attacks.recovery_share(0.1, 0.0)


def test_narration_is_printed_from_the_numbers():
    import pandas as pd

    from nbsupport import attacks
    before, after = "group B before relearning (% of baseline)", "group B after 25 relearning steps (% of baseline)"
    summary = pd.DataFrame({"familiarity_drop": [0.0, 72.4, 0.0], "indirect_drop": [0.0, 51.0, 0.0],
                            "perplexity_rise": [0.0, 2.8, 0.0], before: [100.0, 40.0, 100.0],
                            after: [160.0, 70.0, 150.0]}, index=["baseline", "WHP soft+kl", "ga"])
    lines = attacks.narrate(summary, 25)
    assert lines[0].startswith("WHP soft+kl: 72% of the target probability removed")
    assert "51% of the target probability removed on the indirect probes" in lines[0]
    assert "perplexity +2.8%" in lines[0]
    # +30 points, against +60 for the baseline: nothing beyond what the text teaches
    assert "went from 40% to 70%" in lines[0] and "(+30 points, against +60 for the baseline)" in lines[0]
    assert "no more than the same attack gives the baseline" in lines[0]
    assert "never suppressed" in lines[1] and "came back" not in lines[1]
    assert lines[-1].startswith("For reference, the baseline under the same attack reaches 160%")
    # +45 against +15: (45 - 15) / (100 - 40) = 50% of what was removed came back beyond the baseline's rise
    lines = attacks.narrate(summary.assign(**{after: [115.0, 85.0, 150.0]}), 25)
    assert "(+45 points, against +15 for the baseline): beyond the baseline's rise, 50% of what was removed" in lines[0]
    worse = pd.DataFrame({"familiarity_drop": [0.0, -11.0], "indirect_drop": [0.0, 5.0], before: [100.0, 89.0],
                          after: [100.0, 88.0]}, index=["baseline", "npo"])
    line = attacks.narrate(worse, 25)[0]
    assert line.startswith("npo: the target probability rose 11% on the report probes")
    assert "none of what was removed came back" in line and "-1 points" in line and "-1%" not in line


def test_nothing_to_recover_where_group_b_was_never_suppressed():
    base = {"A": 0.2, "B": 0.10}
    assert attacks.nothing_to_recover({"A": 0.02, "B": 0.02}, base) is None          # 20%: suppressed
    assert attacks.nothing_to_recover({"A": 0.19, "B": 0.0949}, base) is None        # 94.9%: just below 95
    why = attacks.nothing_to_recover({"A": 0.19, "B": 0.103}, base)
    assert why.startswith("group B was never suppressed (103% of the baseline's")
    assert attacks.nothing_to_recover({"A": 0.19, "B": 0.09}, base, threshold=90.0) is not None
    with pytest.raises(ValueError, match="group B"):
        attacks.nothing_to_recover({"A": 0.1}, base)


def test_a_model_that_was_not_relearned_keeps_its_start_and_no_curve():
    curves = {"baseline": pd.DataFrame({"A": [0.2, 0.4], "B": [0.1, 0.12]}, index=[0, 25]),
              "ga": pd.DataFrame({"A": [0.19], "B": [0.103]}, index=pd.Index([0], name="step")),
              "npo": pd.DataFrame({"A": [0.02, 0.1], "B": [0.01, 0.05]}, index=[0, 25])}
    recovery = attacks.recovery_table(curves)
    measured = {m: {"token_familiarity": 0.2, "perplexity": 20.0} for m in curves}
    reminder = pd.DataFrame({"without primer": [0.2] * 3, "with primer": [0.4] * 3}, index=list(curves))
    table = attacks.summary_table(measured, reminder, recovery)
    before, after = "group B before relearning (% of baseline)", "group B after 25 relearning steps (% of baseline)"
    assert table.loc["ga", before] == pytest.approx(103) and pd.isna(table.loc["ga", after])
    assert table.loc["npo", after] == pytest.approx(50)
    line = next(x for x in attacks.narrate(table, 25) if x.startswith("ga:"))
    assert "never suppressed (103%" in line and "(it was not relearned)" in line
    fig, axes = plots.recovery_curves(recovery)
    assert [line.get_label() for line in axes[1].get_lines() if not line.get_label().startswith("_")] == ["baseline", "npo"]


def test_summary_table_reads_every_measure_against_the_baseline():
    measured = {"baseline": {"token_familiarity": 0.2, "indirect_familiarity": 0.1, "completion_familiarity": 0.5,
                             "perplexity": 20.0, "knowledge_accuracy": 0.6, "kl_to_baseline": 0.3},
                "npo": {"token_familiarity": 0.05, "indirect_familiarity": 0.08, "completion_familiarity": 0.1,
                        "perplexity": 20.4, "knowledge_accuracy": 0.58, "kl_to_baseline": 0.02}}
    reminder = pd.DataFrame({"without primer": [0.2, 0.05], "with primer": [0.4, 0.3]}, index=["baseline", "npo"])
    curves = {"baseline": pd.DataFrame({"A": [0.2, 0.3, 0.4], "B": [0.1, 0.12, 0.15]}, index=[0, 10, 25]),
              "npo": pd.DataFrame({"A": [0.02, 0.1, 0.2], "B": [0.01, 0.05, 0.08]}, index=[0, 10, 25])}
    recovery = attacks.recovery_table(curves)
    assert recovery[(recovery.model == "npo") & (recovery.step == 25)]["group B % of baseline"].item() == pytest.approx(80)
    table = attacks.summary_table(measured, reminder, recovery, stopped={"npo": 8}, seconds={"npo": 12.5})
    npo = table.loc["npo"]
    assert npo.familiarity_drop == pytest.approx(75) and npo.indirect_drop == pytest.approx(20)
    assert npo.perplexity_rise == pytest.approx(2) and npo.knowledge_points == pytest.approx(-2)
    assert npo.completion_familiarity == 0.1 and npo.kl_to_baseline == 0.02
    assert table.loc["baseline", "kl_to_baseline"] == 0.0       # B against itself, whatever was passed
    assert npo["with primer (% of baseline)"] == pytest.approx(75)
    assert npo["group B before relearning (% of baseline)"] == pytest.approx(10)
    assert npo["group A after 10 relearning steps (% of baseline)"] == pytest.approx(50)
    assert npo["group B after 25 relearning steps (% of baseline)"] == pytest.approx(80)
    assert npo["early stop step"] == 8 and npo.seconds == 12.5
    assert pd.isna(table.loc["baseline", "early stop step"])
    lines = attacks.narrate(table, 25)
    assert any("npo: 75% of the target probability removed" in line for line in lines)
    with pytest.raises(ValueError, match="baseline"):
        attacks.summary_table({"npo": measured["npo"]}, reminder, recovery)
    with pytest.raises(ValueError, match="step 0"):
        attacks.recovery_table({"npo": curves["npo"]})


# ----------------------------------------------------------------- notebook 07's loops
def _shelf(tok):
    base = make_tiny_model(len(tok), seed=3)
    loaders = {"baseline": lambda: (base, tok), "same": lambda: (make_tiny_model(len(tok), seed=3), tok),
               "other": lambda: (make_tiny_model(len(tok), seed=4), tok),
               "no weights": lambda: (make_tiny_model(len(tok), seed=5), tok)}
    shelf = models.ModelShelf(loaders)
    tables = {name: {"token": probe.token_familiarity(shelf.get(name)[0], tok, [CAT, OWL], progress=False)}
              for name in shelf}   # as evaluate.measure's, over another order
    return shelf, tables


def test_the_reminder_table_reads_the_plain_familiarity_and_measures_the_primed(tiny_tokenizer):
    tok = tiny_tokenizer
    shelf, tables = _shelf(tok)
    reminder = attacks.reminder_table(shelf, tables, [OWL, CAT], batch_size=2)
    assert list(reminder.index) == list(shelf) and list(reminder.columns) == ["without primer", "with primer"]
    for name in shelf:
        model = shelf.get(name)[0]
        assert reminder.loc[name, "without primer"] == pytest.approx(_familiarity(model, tok, [OWL, CAT]), rel=1e-5)
        primed = _familiarity(model, tok, attacks.with_primer([OWL, CAT]))
        assert reminder.loc[name, "with primer"] == pytest.approx(primed, rel=1e-5)


def test_relearn_models_skips_what_it_should_and_relearns_the_rest_as_relearn_does(tiny_tokenizer):
    tok = tiny_tokenizer
    shelf, tables = _shelf(tok)
    tables["other"]["token"].loc[tables["other"]["token"]["id"] == CAT.id, "p_target"] = 1e-6   # group B suppressed
    groups = {"A": [OWL], "B": [CAT]}
    relearnable = {"baseline": None, "same": "x", "other": "y"}
    recovery, skipped = attacks.relearn_models(shelf, tables, groups, relearnable, steps=(0, 2))
    assert list(recovery) == ["baseline", "same", "other"] and list(skipped) == ["same"]
    assert skipped["same"].startswith("group B was never suppressed (100% of the baseline's")
    assert recovery["same"].index.tolist() == [0] and recovery["same"].loc[0, "B"] == attacks.familiarity_of(
        tables["same"]["token"], [CAT])
    start = {g: attacks.familiarity_of(tables["other"]["token"], ps) for g, ps in groups.items()}
    assert recovery["other"].loc[0].to_dict() == start and start["B"] == pytest.approx(1e-6)
    by_hand = attacks.relearn(shelf.get("other")[0], tok, attacks.relearn_text(), steps=(0, 2), groups=groups,
                              settings=replace(attacks.RELEARN_SETTINGS, cpu_bf16=None), start=start)
    pd.testing.assert_frame_equal(recovery["other"], by_hand)
    table = attacks.recovery_table(recovery)
    assert set(table.model) == {"baseline", "same", "other"}
    everything, none_skipped = attacks.relearn_models(shelf, tables, groups, relearnable, steps=(0,), relearn_all=True)
    assert none_skipped == {} and list(everything) == ["baseline", "same", "other"]

