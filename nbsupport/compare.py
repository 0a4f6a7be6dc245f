"""Every model of a run measured the same way, and read against the baseline
(notebooks 06 and 07): the measuring loops, and the lines that read their numbers.

* ``measure_recipes``: the baseline and one unlearned model per recipe of notebook 05, on
  the full measure (``evaluate.full_inputs``), each kept in its memo for notebook 07;
* ``light_baseline`` and ``measure_variants``: the ablation and sweep variants, on the
  light measure (``evaluate.light_inputs``), against the baseline on the same measure;
* ``tradeoff_points``: every model, and every recipe along its steps, as a drop in
  familiarity and a rise in perplexity (``scoring.drop_pct``, ``scoring.rise_pct``);
* ``measure_shelf``: notebook 07's models on one measure, the KL against B computed once.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from . import corpus, evaluate, models, probe, scoring
from .measure_memo import run_memo
from .pair import ModelPair

# measures of the full measure that the light one does not take (or takes on other texts)
_NOT_LIGHT = ("perplexity", "perplexity_nearby", "completion_familiarity", "kl_to_baseline")


# ----------------------------------------------------------------- notebook 06
def measure_recipes(run, cfg, inputs: dict, best: str, device=None) -> tuple[dict, dict, ModelPair, object]:
    """The baseline, then each recipe's unlearned model (``finetune/<recipe>/adapter``, in
    the order of ``cfg.finetune_recipes``), measured with ``inputs`` (``evaluate.full_inputs``).

    B is the first recipe's model with its adapter off; each unlearned model's KL is to
    it. Each model's probe rows and text sums are kept beside its weights
    (``measures.json``, ``measure_memo.run_memo``): notebook 07 reads them back.
    Returns ``(results, tables, best_pair, tok)``: ``{model: numbers}``, ``{model:
    tables}`` (``evaluate.measure``'s), the ``ModelPair`` of the recipe ``best`` (kept
    in memory) and the tokenizer.
    """
    if best not in cfg.finetune_recipes:
        raise ValueError(f"the best recipe {best!r} is not among the recipes {list(cfg.finetune_recipes)}")
    results, tables, best_pair, tok = {}, {}, None, None
    for recipe in cfg.finetune_recipes:
        U, tok = models.load_model(cfg.model, adapter=run.require(f"finetune/{recipe}/adapter"), device=device)
        pair = ModelPair(U)   # B is the same weights with the adapter off
        if not results:
            with pair.base() as B:
                results["baseline"], tables["baseline"] = evaluate.measure(
                    B, tok, **inputs, batch_size=cfg.batch_size, completion_tokens=cfg.completion_tokens,
                    memo=run_memo(run, cfg.model, B), desc="the baseline")
        memo = run_memo(run, cfg.model, U, run.path(f"finetune/{recipe}/adapter"))
        results[recipe], tables[recipe] = evaluate.measure(U, tok, **inputs, kl_pair=pair, batch_size=cfg.batch_size,
                                                           completion_tokens=cfg.completion_tokens, memo=memo,
                                                           desc=recipe)
        if recipe == best:
            best_pair = pair
        del U, pair
    return results, tables, best_pair, tok


def _moved(x: float, y: float) -> str:
    return f"stayed at {x:.3f}" if f"{x:.3f}" == f"{y:.3f}" else f"{'fell' if y < x else 'rose'} from {x:.3f} to {y:.3f}"


def headline(results: dict, best: str) -> str:
    """The line under notebook 06's main table: what the ``best`` recipe did to token and
    completion familiarity, perplexity and general knowledge, next to the paper's numbers."""
    b, u = results["baseline"], results[best]
    change = evaluate.relative_to(b, u)
    return (f"With the best recipe ({best!r}) token familiarity {_moved(b['token_familiarity'], u['token_familiarity'])} "
            f"({change['familiarity_drop']:.0f}% of it gone; the paper: 0.244 to 0.006, 97.5%) and completion "
            f"familiarity {_moved(b['completion_familiarity'], u['completion_familiarity'])} (the paper: 0.290 to "
            f"0.007). Perplexity on generic text {_moved(b['perplexity'], u['perplexity'])} "
            f"({change['perplexity_rise']:+.1f}%); "
            + ("general knowledge did not change." if abs(change["knowledge_points"]) < 0.05
               else f"general knowledge changed by {change['knowledge_points']:+.1f} points."))


def light_baseline(full: dict, pair: ModelPair, tok, texts: Sequence[str]) -> dict:
    """The baseline on the light measure, from its ``full`` numbers: the full measure read
    the same probes, so only the perplexity on the light ``texts`` is new (B: ``pair``
    with its adapter off)."""
    base = {k: v for k, v in full.items() if k not in _NOT_LIGHT}
    with pair.base() as B:
        base["perplexity"] = scoring.perplexity(B, tok, texts)
    return base


def measure_variants(run, cfg, inputs: dict, device=None) -> tuple[dict, dict]:
    """The variants notebook 05 trained (``finetune/variants.json``; none if it trained
    none), each measured with ``inputs`` (``evaluate.light_inputs``), in the order of the
    file. Returns ``(ablations, sweeps)``, each ``{variant: numbers}``."""
    variants = run.read_json("finetune/variants.json") if run.exists("finetune/variants.json") else {}
    ablations, sweeps = {}, {}
    for name, info in variants.items():
        U, tok = models.load_model(cfg.model, adapter=run.require(info["adapter"]), device=device)
        numbers, _ = evaluate.measure(U, tok, **inputs, batch_size=cfg.batch_size, desc=name)
        (ablations if info["group"] == "ablation" else sweeps)[name] = numbers
        del U
    return ablations, sweeps


# A full cpu run's token drop moved by up to 2.2 points across three seeds
# (docs/experiments/2026-11-29-headline-run-and-three-seeds.md); the ablation's short runs are noisier.
ABLATION_NOISE_POINTS = 5.0


def ablation_verdict(base_light: dict, ablations: dict) -> str | None:
    """Whether the ablation agrees with the paper (reinforcement alone and anchors alone
    each weaker than both together), in a line; None without the three ablations."""
    if not {"reinforcement only", "anchors only", "both"} <= set(ablations):
        return None
    drops = {n: evaluate.relative_to(base_light, v)["familiarity_drop"] for n, v in ablations.items()}
    order = sorted(drops, key=drops.get, reverse=True)
    said = [f"{n} {drops[n]:.0f}%" if drops[n] >= 0 else f"{n} none (it rose {-drops[n]:.0f}%)" for n in order]
    gap = drops[order[0]] - drops[order[1]]
    if gap < ABLATION_NOISE_POINTS:
        return ("Token familiarity gone, at the same short budget: " + ", ".join(said)
                + f". The first two differ by {gap:.1f} points, on one seed: within what a rerun moves, so this run "
                  "neither confirms nor contradicts the paper's finding that both together beat either alone.")
    return ("Token familiarity gone, at the same short budget: " + ", ".join(said)
            + (". As in the paper, both together beat either alone." if order[0] == "both"
               else f". Unlike the paper, {order[0]} did better than both together in this run."))


def tradeoff_points(run, recipes: Sequence[str], results: dict, ablations: dict, sweeps: dict,
                    base_light: dict) -> pd.DataFrame:
    """The points of notebook 06's tradeoff plot (``plots.tradeoff``): one row per model
    (``group`` main, ablation or sweep; the main models against the baseline's full
    measure, the variants against ``base_light``), then each recipe along its finetuning
    steps (``finetune/<recipe>/steps.json``, against its step 0; not annotated)."""
    rows = []
    for group, named, reference in (("main", {k: v for k, v in results.items() if k != "baseline"},
                                     results["baseline"]),
                                    ("ablation", ablations, base_light), ("sweep", sweeps, base_light)):
        for name, numbers in named.items():
            rows.append({"group": group, "name": name, **evaluate.relative_to(reference, numbers)})
    for recipe in recipes:
        hist = run.read_json(f"finetune/{recipe}/steps.json")
        for h in hist:
            rows.append({"group": f"steps: {recipe}", "name": str(h["step"]), "annotate": False,
                         "familiarity_drop": scoring.drop_pct(hist[0]["familiarity"], h["familiarity"]),
                         "perplexity_rise": scoring.rise_pct(hist[0]["perplexity"], h["perplexity"])})
    return pd.DataFrame(rows)


def step_curve_lines(points: pd.DataFrame, cfg, inputs: dict) -> list[str]:
    """Per recipe, where its step curve ends (``cfg.step_probes`` dev probes, one text)
    against its full measure (``inputs``' probes and texts), from ``tradeoff_points``."""
    n_step = len(probe.split(probe.load_probes("hp_token"), "dev")[:cfg.step_probes])
    n_texts = len(inputs["eval_texts"])
    lines = []
    for recipe in cfg.finetune_recipes:
        end = points[points["group"] == f"steps: {recipe}"].iloc[-1]
        full = points[(points["group"] == "main") & (points["name"] == recipe)].iloc[0]
        lines.append(f"{recipe}: the step curve ends at {end.familiarity_drop:.0f}% of the familiarity gone and "
                     f"perplexity {end.perplexity_rise:+.1f}% ({n_step} dev probes, one text); the full measure "
                     f"gives {full.familiarity_drop:.0f}% and {full.perplexity_rise:+.1f}% "
                     f"({len(inputs['token_probes'])} probes, {n_texts} held-out text{'s' if n_texts != 1 else ''}).")
    return lines


# ----------------------------------------------------------------- notebook 07
def measure_shelf(run, cfg, shelf: models.ModelShelf, adapters: dict, inputs: dict) -> tuple[dict, dict, dict]:
    """Every model on ``shelf`` (``models.ModelShelf``, with a ``"baseline"``) measured
    with ``inputs`` (``evaluate.methods_inputs``), in the shelf's order; the KL to the
    baseline on one held-out text, B's side computed once (``scoring.BaseReference``).

    ``adapters`` ({model: adapter directory, None for the baseline}) names the models
    with a memo (``measures.json``): what notebook 06 or an earlier run measured on the
    same model is read back, not scored again. Returns ``(measured, tables, read_back)``:
    ``{model: numbers}``, ``{model: tables}`` and ``{model: probes and texts read back}``.
    """
    reference = scoring.BaseReference(*shelf.get("baseline"), corpus.heldout_texts(limit=1))
    measured, tables, read_back = {}, {}, {}
    for name in shelf:
        model, tok = shelf.get(name)
        memo = run_memo(run, cfg.model, model, adapters[name]) if name in adapters else None
        measured[name], tables[name] = evaluate.measure(model, tok, **inputs, kl_reference=reference,
                                                        batch_size=cfg.batch_size, memo=memo, desc=name)
        read_back[name] = memo.reads if memo else 0
    return measured, tables, read_back


# ----------------------------------------------------------------- the paper and this run
# The paper's published numbers (Eldan & Russinovich 2023, Llama-2-7b-chat; docs/ALGORITHM.md section 6):
# familiarity before and after, and its seven benchmarks before and after.
PAPER_FAMILIARITY = {"token_familiarity": (0.244, 0.006), "completion_familiarity": (0.290, 0.007)}
PAPER_BENCHMARKS = {"ARC-Challenge": (0.440, 0.414), "ARC-Easy": (0.744, 0.724), "BoolQ": (0.807, 0.796),
                    "HellaSwag": (0.577, 0.557), "OpenBookQA": (0.338, 0.328), "PIQA": (0.767, 0.760),
                    "WinoGrande": (0.663, 0.657)}
FORGET_TARGET_PCT = 90.0          # the course's bar: 90% of the token familiarity gone (report half, stated probes) ...
KNOWLEDGE_P_MIN = 0.05            # ... general knowledge within noise (exact McNemar p >= 0.05) ...
# ... and perplexity up at most scoring.PERPLEXITY_LIMIT_PCT.


def _before_after(before: float, after: float, digits: int = 3) -> str:
    return f"{before:.{digits}f} -> {after:.{digits}f} ({scoring.drop_pct(before, after):.1f}% gone)"


def paper_vs_run(results: dict, flips: dict) -> pd.DataFrame:
    """The paper's published numbers beside this run's, one column per recipe: token and
    completion familiarity before -> after, general knowledge and perplexity. ``results``
    as notebook 06 measures them (with ``baseline``), ``flips`` from
    ``evaluate.knowledge_flips`` per recipe."""
    base = results["baseline"]
    bench = [100 * (after - before) for before, after in PAPER_BENCHMARKS.values()]
    paper = {"token familiarity (all probes)": _before_after(*PAPER_FAMILIARITY["token_familiarity"]),
             "token familiarity (report half)": "(no halves)",
             "completion familiarity": _before_after(*PAPER_FAMILIARITY["completion_familiarity"]),
             "general knowledge": f"{len(bench)} benchmarks: {sum(bench) / len(bench):+.1f} points on average",
             "perplexity on generic text": "not reported"}
    table = {"paper (Llama-2-7b-chat)": paper}
    for name, numbers in results.items():
        if name == "baseline":
            continue
        change, flip = evaluate.relative_to(base, numbers), flips.get(name, {})
        table[f"this run: {name}"] = {
            "token familiarity (all probes)": _before_after(base["token_familiarity"], numbers["token_familiarity"]),
            "token familiarity (report half)": _before_after(base["token_familiarity_report"],
                                                             numbers["token_familiarity_report"]),
            "completion familiarity": _before_after(base["completion_familiarity"], numbers["completion_familiarity"]),
            "general knowledge": f"{100 * base['knowledge_accuracy']:.1f}% -> {100 * numbers['knowledge_accuracy']:.1f}%"
                                 + (f" (McNemar p = {flip['p_value']:.2f})" if "p_value" in flip else ""),
            "perplexity on generic text": f"{base['perplexity']:.1f} -> {numbers['perplexity']:.1f} "
                                          f"({change['perplexity_rise']:+.1f}%)"}
    return pd.DataFrame(table)


STATED_COLUMNS = {
    "in text": ("familiarity_in_text_drop", "% of the token familiarity gone, probes whose answer phrase the "
                                            "training text states"),
    "in text, report": ("familiarity_in_text_report_drop", "the same on the report half"),
    "not in text": ("familiarity_not_in_text_drop", "% gone, probes whose answer phrase it never states"),
    "not in text, report": ("familiarity_not_in_text_report_drop", "the same on the report half"),
    "indirect in text": ("indirect_in_text_drop", "% gone, indirect probes whose answer phrase it states"),
    "indirect not in text": ("indirect_not_in_text_drop", "% gone, the other indirect probes")}


def stated_split(results: dict) -> pd.DataFrame:
    """Each unlearned model's drops split by whether the training text states the probe's
    answer phrase (measured with ``stated_text``), one row per model, one column per
    ``STATED_COLUMNS`` key (``tabular.show`` gives them their short headers)."""
    base = results["baseline"]
    rows = {name: evaluate.relative_to(base, numbers) for name, numbers in results.items() if name != "baseline"}
    return pd.DataFrame({name: {key: row.get(key) for key, _ in STATED_COLUMNS.values()}
                         for name, row in rows.items()}).T


def targets_verdict(results: dict, flips: dict) -> str:
    """One line per recipe: which of the course's three targets it met, and by how much
    it missed the others (perplexity on the generic text; knowledge flips; forgetting on
    the report half's probes whose answer phrase the training text states, where the run
    measured that split, else on the whole report half)."""
    base = results["baseline"]
    key = "token_familiarity_in_text_report"
    stated = key in base and all(key in numbers for numbers in results.values())
    key = key if stated else "token_familiarity_report"
    which = ("probes of the report half whose answer phrase the training text states" if stated
             else "report half")
    lines = [f"The course's targets: at least {FORGET_TARGET_PCT:.0f}% of the token familiarity gone on the {which}, "
             f"perplexity up at most {scoring.PERPLEXITY_LIMIT_PCT:.0f}%, general knowledge within noise "
             f"(McNemar p >= {KNOWLEDGE_P_MIN})."]
    for name, numbers in results.items():
        if name == "baseline":
            continue
        drop = scoring.drop_pct(base[key], numbers[key])
        rise = scoring.rise_pct(base["perplexity"], numbers["perplexity"])
        p = flips.get(name, {}).get("p_value")
        parts = [f"forgetting {drop:.1f}% " + ("(met)" if drop >= FORGET_TARGET_PCT
                                               else f"(missed by {FORGET_TARGET_PCT - drop:.1f} points)"),
                 f"perplexity {rise:+.1f}% " + ("(met)" if rise <= scoring.PERPLEXITY_LIMIT_PCT
                                                else f"(missed by {rise - scoring.PERPLEXITY_LIMIT_PCT:.1f} points)")]
        if p is not None:
            parts.append(f"general knowledge p = {p:.3g} " + ("(met)" if p >= KNOWLEDGE_P_MIN else "(missed)"))
        met = sum(part.endswith("(met)") for part in parts)
        lines.append(f"{name}: {', '.join(parts)}: {met} of {len(parts)} targets met.")
        if "perplexity_nearby" in numbers and "perplexity_nearby" in base:
            lines.append(f"  (not a target, but a cost: perplexity on other fantasy writing "
                         f"{scoring.rise_pct(base['perplexity_nearby'], numbers['perplexity_nearby']):+.1f}%)")
    lines.append(f"A knowledge p-value of {KNOWLEDGE_P_MIN} or more says the flips could be chance with this many "
                 "questions; it does not prove that nothing was lost.")
    return "\n".join(lines)


# ----------------------------------------------------------------- compact views (tabular.show)
MEASURE_COLUMNS = {
    "token": ("token_familiarity", "token familiarity: mean probability of the target continuation, all probes"),
    "report": ("token_familiarity_report", "the same on the report half"),
    "indirect": ("indirect_familiarity", "the same on the indirect probes (no name of the world)"),
    "completion": ("completion_familiarity", "completion familiarity (judge score / 3)"),
    "GK": ("knowledge_accuracy", "general-knowledge accuracy"),
    "ppl": ("perplexity", "perplexity on generic held-out text"),
    "ppl nearby": ("perplexity_nearby", "perplexity on other fantasy"),
    "KL": ("kl_to_baseline", "KL(B || model) per token, nats")}
CHANGE_COLUMNS = {
    "token": MEASURE_COLUMNS["token"],
    "gone %": ("familiarity_drop", "% of the baseline's token familiarity gone, all probes"),
    "report gone %": ("familiarity_report_drop", "the same on the report half"),
    "indirect gone %": ("indirect_drop", "the same on the indirect probes"),
    "completion": MEASURE_COLUMNS["completion"],
    "GK pts": ("knowledge_points", "general-knowledge accuracy change, points"),
    "ppl rise %": ("perplexity_rise", "perplexity rise on generic held-out text"),
    "KL": MEASURE_COLUMNS["KL"]}
CHANGE_PERCENT = ("gone %", "report gone %", "indirect gone %", "GK pts", "ppl rise %")
