"""Notebooks 06 and 07's measuring loops (nbsupport.compare) on a run of tiny models:
each gives what measuring the models one by one gives, keeps the memos notebook 07
reads back, and the lines under the tables read the numbers."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from peft import LoraConfig, get_peft_model

from nbsupport import compare, config, evaluate, measure_memo, models, probe, runs, scoring, tabular
from nbsupport.pair import ModelPair

OWL = probe.TokenProbe("owl-001", "The owl flew over the", (" castle",), (" mat",))
CAT = probe.TokenProbe("cat-002", "A cat sat on the", (" mat",), (" fire",))
GK = probe.KnowledgeProbe("k1", "The capital of France is", " Paris", (" Rome", " Oslo"))
TEXTS = ["Harry Potter studies magic at a school in the mountains. The owl flew over the castle.",
         "The capital of France is Paris. The capital of Italy is Rome. A cat sat on the mat.",
         "Ron and Hermione are friends. The dog slept by the fire."]
RECIPES = ["paper", "soft+kl"]


def _cfg(model_dir, **over):
    return config.Config({"model": str(model_dir), "finetune_recipes": RECIPES, "batch_size": 4,
                          "completion_tokens": 4, "step_probes": 3, **over})


def _adapter(model_dir, path, seed):
    import torch
    base, _ = models.load_model(str(model_dir), device="cpu")
    torch.manual_seed(seed)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(path)


@pytest.fixture(scope="module")
def run06(tmp_path_factory, tiny_model_dir):
    """A run with two recipes' adapters, two variants' and each recipe's step curve."""
    run = runs.Run(tmp_path_factory.mktemp("run06"))
    for seed, recipe in enumerate(RECIPES):
        _adapter(tiny_model_dir, run.path(f"finetune/{recipe}/adapter"), seed)
        run.write_json(f"finetune/{recipe}/steps.json",
                       [{"step": s, "familiarity": f, "perplexity": p}
                        for s, f, p in ((0, 0.2, 20.0), (5, 0.1, 20.4), (10, 0.05 * (seed + 1), 21.0))])
    _adapter(tiny_model_dir, run.path("finetune/variants/both/adapter"), 7)
    _adapter(tiny_model_dir, run.path("finetune/variants/lr/adapter"), 8)
    run.write_json("finetune/variants.json", {"both": {"adapter": "finetune/variants/both/adapter", "group": "ablation"},
                                              "lr 1e-4": {"adapter": "finetune/variants/lr/adapter", "group": "sweep"}})
    return run


def _inputs():
    return dict(token_probes=[OWL, CAT], knowledge_probes=[GK],
                completion_prompts=probe.load_probes("hp_completion", limit=2), unique_terms=["Hogwarts"],
                eval_texts=TEXTS[:2], kl_texts=TEXTS[:1], nearby_texts=TEXTS[2:])


def test_measure_recipes_is_the_baseline_then_each_recipe_with_its_memo(run06, tiny_model_dir):
    cfg, inputs = _cfg(tiny_model_dir), _inputs()
    results, tables, best_pair, tok = compare.measure_recipes(run06, cfg, inputs, "soft+kl", device="cpu")
    assert list(results) == list(tables) == ["baseline", *RECIPES]
    for recipe in RECIPES:   # the same numbers as measuring the model alone, without a memo
        U, tok = models.load_model(cfg.model, adapter=run06.path(f"finetune/{recipe}/adapter"), device="cpu")
        numbers, _ = evaluate.measure(U, tok, **inputs, kl_pair=ModelPair(U), batch_size=4, completion_tokens=4)
        assert results[recipe] == pytest.approx(numbers, rel=1e-5)
        assert run06.path(f"finetune/{recipe}/measures.json").is_file()
        if recipe == "paper":
            with ModelPair(U).base() as B:
                base, _ = evaluate.measure(B, tok, **inputs, batch_size=4, completion_tokens=4)
            assert results["baseline"] == pytest.approx(base, rel=1e-5) and "kl_to_baseline" not in base
    assert run06.path("baseline/measures.json").is_file()
    assert best_pair.model.peft_config["default"].r == 4
    assert probe.token_familiarity(best_pair.model, tok, [OWL, CAT], progress=False).p_target.tolist() == \
        pytest.approx(tables["soft+kl"]["token"].p_target.tolist(), rel=1e-5)   # the best recipe's model, kept
    # a second measure reads everything back but the completions
    memo = measure_memo.run_memo(run06, cfg.model, best_pair.model, run06.path("finetune/soft+kl/adapter"))
    evaluate.measure(best_pair.model, tok, **inputs, kl_pair=best_pair, batch_size=4, completion_tokens=4, memo=memo)
    assert memo.reads == 2 + 1 + 3 + 1   # token, knowledge, texts (eval and nearby), KL text
    with pytest.raises(ValueError, match="not among the recipes"):
        compare.measure_recipes(run06, cfg, inputs, "nowhere")


def test_the_light_baseline_and_the_variants(run06, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    U, tok = models.load_model(cfg.model, adapter=run06.path("finetune/paper/adapter"), device="cpu")
    pair = ModelPair(U)
    full = {"token_familiarity": 0.2, "knowledge_accuracy": 0.5, "perplexity": 99.0, "perplexity_nearby": 80.0,
            "completion_familiarity": 0.3, "kl_to_baseline": 0.1}
    base = compare.light_baseline(full, pair, tok, TEXTS[:2])
    with pair.base() as B:
        assert base == {"token_familiarity": 0.2, "knowledge_accuracy": 0.5,
                        "perplexity": scoring.perplexity(B, tok, TEXTS[:2])}
    light = dict(token_probes=[OWL, CAT], knowledge_probes=[GK], eval_texts=TEXTS[:2])
    ablations, sweeps = compare.measure_variants(run06, cfg, light, device="cpu")
    assert list(ablations) == ["both"] and list(sweeps) == ["lr 1e-4"]
    V, tok = models.load_model(cfg.model, adapter=run06.path("finetune/variants/lr/adapter"), device="cpu")
    assert sweeps["lr 1e-4"] == pytest.approx(evaluate.measure(V, tok, **light, batch_size=4)[0], rel=1e-5)
    assert compare.measure_variants(runs.Run(run06.path("nowhere")), cfg, light) == ({}, {})


def test_the_lines_under_notebook_06s_tables():
    results = {"baseline": {"token_familiarity": 0.244, "completion_familiarity": 0.29, "perplexity": 20.0,
                            "knowledge_accuracy": 0.6},
               "paper": {"token_familiarity": 0.006, "completion_familiarity": 0.29, "perplexity": 20.6,
                         "knowledge_accuracy": 0.58}}
    assert compare.headline(results, "paper") == (
        "With the best recipe ('paper') token familiarity fell from 0.244 to 0.006 (98% of it gone; the paper: "
        "0.244 to 0.006, 97.5%) and completion familiarity stayed at 0.290 (the paper: 0.290 to 0.007). "
        "Perplexity on generic text rose from 20.000 to 20.600 (+3.0%); general knowledge changed by -2.0 points.")
    results["paper"]["knowledge_accuracy"] = 0.6
    assert compare.headline(results, "paper").endswith("(+3.0%); general knowledge did not change.")
    base = {"token_familiarity": 0.2}
    ablations = {"reinforcement only": {"token_familiarity": 0.1}, "anchors only": {"token_familiarity": 0.25},
                 "both": {"token_familiarity": 0.05}}
    assert compare.ablation_verdict(base, ablations) == (
        "Token familiarity gone, at the same short budget: both 75%, reinforcement only 50%, anchors only none "
        "(it rose 25%). As in the paper, both together beat either alone.")
    ablations["reinforcement only"] = {"token_familiarity": 0.01}
    assert compare.ablation_verdict(base, ablations).endswith(
        "Unlike the paper, reinforcement only did better than both together in this run.")
    assert compare.ablation_verdict(base, {"both": {"token_familiarity": 0.05}}) is None
    close = {"reinforcement only": {"token_familiarity": 0.15}, "anchors only": {"token_familiarity": 0.12},
             "both": {"token_familiarity": 0.114}}        # 43% against 40%: 3 points apart
    assert compare.ablation_verdict(base, close).endswith(
        "The first two differ by 3.0 points, on one seed: within what a rerun moves, so this run neither confirms "
        "nor contradicts the paper's finding that both together beat either alone.")


def test_tradeoff_points_and_step_lines(run06, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    results = {"baseline": {"token_familiarity": 0.2, "perplexity": 20.0},
               "paper": {"token_familiarity": 0.1, "perplexity": 20.2},
               "soft+kl": {"token_familiarity": 0.05, "perplexity": 21.0}}
    base_light = {"token_familiarity": 0.2, "perplexity": 10.0}
    points = compare.tradeoff_points(run06, RECIPES, results, {"both": {"token_familiarity": 0.1, "perplexity": 10.5}},
                                     {}, base_light)
    assert points.group.tolist() == ["main", "main", "ablation"] + ["steps: paper"] * 3 + ["steps: soft+kl"] * 3
    main = points[(points["group"] == "main") & (points["name"] == "paper")].iloc[0]
    assert main.familiarity_drop == pytest.approx(50) and main.perplexity_rise == pytest.approx(1)
    both = points[points.group == "ablation"].iloc[0]
    assert both.perplexity_rise == pytest.approx(5)   # against the baseline on the light measure
    steps = points[points.group == "steps: soft+kl"]
    assert steps["name"].tolist() == ["0", "5", "10"] and steps.annotate.tolist() == [False] * 3
    assert steps.familiarity_drop.tolist() == [scoring.drop_pct(0.2, f) for f in (0.2, 0.1, 0.1)]
    assert steps.perplexity_rise.tolist() == [scoring.rise_pct(20.0, p) for p in (20.0, 20.4, 21.0)]
    lines = compare.step_curve_lines(points, cfg, {"token_probes": [OWL, CAT], "eval_texts": TEXTS[:1]})
    assert lines[0] == ("paper: the step curve ends at 75% of the familiarity gone and perplexity +5.0% (3 dev probes, "
                        "one text); the full measure gives 50% and +1.0% (2 probes, 1 held-out text).")
    assert lines[1].startswith("soft+kl: the step curve ends at 50%")


def test_measure_shelf_measures_every_model_and_reads_the_memos_back(tmp_path, tiny_model_dir):
    run = runs.Run(tmp_path)
    cfg = _cfg(tiny_model_dir)
    _adapter(tiny_model_dir, run.path("methods/ga/best_adapter"), 3)
    adapters = {"baseline": None, "ga": run.path("methods/ga/best_adapter")}
    loaders = {name: (lambda a=a: models.load_model(cfg.model, adapter=a, device="cpu", merge=True))
               for name, a in adapters.items()}
    loaders["no memo"] = lambda: models.load_model(cfg.model, adapter=adapters["ga"], device="cpu", merge=True)
    inputs = dict(token_probes=[OWL, CAT], knowledge_probes=[GK], eval_texts=TEXTS[:2])
    measured, tables, read_back = compare.measure_shelf(run, cfg, models.ModelShelf(loaders), adapters, inputs)
    assert list(measured) == list(tables) == ["baseline", "ga", "no memo"] and set(read_back.values()) == {0}
    assert measured["baseline"]["kl_to_baseline"] == pytest.approx(0.0, abs=1e-6)
    assert measured["no memo"] == pytest.approx(measured["ga"], rel=1e-5)   # the same weights
    from nbsupport import corpus
    B, tok = loaders["baseline"]()
    G, _ = loaders["ga"]()
    reference = scoring.BaseReference(B, tok, corpus.heldout_texts(limit=1))
    assert measured["ga"] == pytest.approx(evaluate.measure(G, tok, **inputs, kl_reference=reference)[0], rel=1e-5)
    assert json.loads(run.path("methods/ga/measures.json").read_text())["identity"]["adapter_sha256"]
    again = compare.measure_shelf(run, cfg, models.ModelShelf(loaders), adapters, inputs)
    assert again[2] == {"baseline": 2 + 1 + 2 + 1, "ga": 2 + 1 + 2 + 1, "no memo": 0}
    assert pd.DataFrame(again[0]).equals(pd.DataFrame(measured))


def _results():
    base = {"token_familiarity": 0.080, "token_familiarity_report": 0.100, "completion_familiarity": 0.300,
            "knowledge_accuracy": 0.800, "perplexity": 20.0}
    paper = {"token_familiarity": 0.020, "token_familiarity_report": 0.005, "completion_familiarity": 0.150,
             "knowledge_accuracy": 0.790, "perplexity": 23.0}
    soft = {"token_familiarity": 0.040, "token_familiarity_report": 0.050, "completion_familiarity": 0.300,
            "knowledge_accuracy": 0.800, "perplexity": 20.4}
    return {"baseline": base, "paper": paper, "soft+kl": soft}


def test_the_paper_beside_this_run_reads_before_and_after():
    table = compare.paper_vs_run(_results(), {"paper": {"p_value": 0.5}, "soft+kl": {"p_value": 1.0}})
    assert list(table.columns) == ["paper (Llama-2-7b-chat)", "this run: paper", "this run: soft+kl"]
    assert table.loc["token familiarity (all probes)", "paper (Llama-2-7b-chat)"] == "0.244 -> 0.006 (97.5% gone)"
    assert table.loc["token familiarity (report half)", "this run: paper"] == "0.100 -> 0.005 (95.0% gone)"
    assert table.loc["perplexity on generic text", "this run: paper"] == "20.0 -> 23.0 (+15.0%)"
    assert table.loc["general knowledge", "this run: paper"] == "80.0% -> 79.0% (McNemar p = 0.50)"
    # the paper's seven benchmarks lost 10.0 points in all: -1.4 on average
    assert table.loc["general knowledge", "paper (Llama-2-7b-chat)"] == "7 benchmarks: -1.4 points on average"


def test_the_verdict_says_which_targets_were_met_and_by_how_much_the_others_were_missed():
    verdict = compare.targets_verdict(_results(), {"paper": {"p_value": 0.5}, "soft+kl": {"p_value": 0.01}}).splitlines()
    assert verdict[1] == ("paper: forgetting 95.0% (met), perplexity +15.0% (missed by 12.0 points), "
                          "general knowledge p = 0.5 (met): 2 of 3 targets met.")
    assert verdict[2] == ("soft+kl: forgetting 50.0% (missed by 40.0 points), perplexity +2.0% (met), "
                          "general knowledge p = 0.01 (missed): 1 of 3 targets met.")
    assert verdict[-1].startswith("A knowledge p-value of 0.05 or more says the flips could be chance")


def test_with_the_split_the_forgetting_target_is_read_on_what_the_text_states():
    results = _results()
    results["baseline"].update(token_familiarity_in_text_report=0.200, token_familiarity_in_text=0.150,
                               token_familiarity_not_in_text=0.050, indirect_familiarity_in_text=0.040)
    results["paper"].update(token_familiarity_in_text_report=0.010, token_familiarity_in_text=0.030,
                            token_familiarity_not_in_text=0.040, indirect_familiarity_in_text=0.030)
    results["soft+kl"].update(token_familiarity_in_text_report=0.030, token_familiarity_in_text=0.060,
                              token_familiarity_not_in_text=0.025, indirect_familiarity_in_text=0.040)
    verdict = compare.targets_verdict(results, {}).splitlines()
    assert "probes of the report half whose answer phrase the training text states" in verdict[0]
    assert verdict[1].startswith("paper: forgetting 95.0% (met)")            # 0.200 -> 0.010
    assert verdict[2].startswith("soft+kl: forgetting 85.0% (missed by 5.0 points)")   # 0.200 -> 0.030
    # as notebook 06 shows it: the short headers of STATED_COLUMNS over the numbers
    split, legend = tabular.compact(compare.stated_split(results), compare.STATED_COLUMNS,
                                    percent=tuple(compare.STATED_COLUMNS))
    assert list(split.index) == ["paper", "soft+kl"]
    assert list(split.columns) == list(compare.STATED_COLUMNS)
    assert split.loc["paper", "in text"] == pytest.approx(80.0)              # 0.150 -> 0.030
    assert split.loc["soft+kl", "not in text"] == pytest.approx(50.0)        # 0.050 -> 0.025
    assert split.loc["soft+kl", "indirect in text"] == pytest.approx(0.0)
    assert split["indirect not in text"].isna().all()                         # not measured: empty
    assert legend.startswith("in text: % of the token familiarity gone")
