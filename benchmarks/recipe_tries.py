"""Finetuning tries on one run's labels, measured side by side on the development
half of the probes (recipes are chosen there; the report half is only reported):
token probes (dev), indirect probes (dev), perplexity on five held-out texts (one
of each kind of writing), general knowledge, against the baseline on the same
measure. The run directory must hold notebooks 01-04's outputs.

    python benchmarks/recipe_tries.py --run-dir runs/cpu --try base: \\
        --try lr6e-4:learning_rate=6e-4 --try hard:recipe=paper --try kl0.5:kl_weight=0.5

A try is NAME:key=value,... with TrainSettings fields (epochs, learning_rate,
lora_r, method, ...), recipe options (recipe, kl_weight, temperature, targets,
select), alpha, and blocks=N: train on the labels of the text's first N blocks only
(a shorter text; the split of the probes by what the text states is then by those
blocks' text, for the baseline too). Each try is trained once (kept under RUN_DIR/tries/NAME) and measured.
Past tries and their tables: docs/experiments/.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from nbsupport import corpus, evaluate, finetune, generic_labels, models, probe, runner, runs
from nbsupport.pair import ModelPair

RECIPE_KEYS = ("kl_weight", "temperature", "targets", "select")


def parse_try(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition(":")
    options = dict(kv.split("=", 1) for kv in spec.split(",") if kv)
    return name, {k: runner.parse_value(v) for k, v in options.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--try", dest="tries", action="append", default=[])
    args = ap.parse_args()
    run = runs.Run(args.run_dir)
    # notebook 05's settings (inherited from 01-04), without touching the run's records
    cfg = runs.inherited_config(args.run_dir, args.profile, "evaluate")
    dev = probe.split(probe.load_probes("hp_token"), "dev")
    light = dict(token_probes=dev, extra_token_probes={"indirect": probe.split(probe.load_probes("hp_indirect"), "dev")},
                 knowledge_probes=probe.load_probes("general_knowledge"), eval_texts=corpus.heldout_texts(limit=5),
                 stated_text=run.require("corpus/target.txt").read_text("utf-8"))
    data = generic_labels.load(run)
    model, tok = models.load_model(cfg.model)
    baseline, base_tables = evaluate.measure(model, tok, **light)
    rows = {"baseline": {**baseline, "seconds": 0.0}}
    for text in args.tries:
        name, options = parse_try(text)
        recipe = options.pop("recipe", "soft+kl")
        alpha = float(options.pop("alpha", cfg.alpha))
        recipe_options = {k: options.pop(k) for k in RECIPE_KEYS if k in options}
        blocks = options.pop("blocks", None)
        labels_of, base = (data, baseline) if blocks is None else (data.first(blocks), dict(baseline))
        start = time.perf_counter()
        U, tok = finetune.train_variant(cfg, run, labels_of, alpha, recipe, out=f"tries/{name}",
                                        recipe_options=recipe_options, **options)
        seconds = time.perf_counter() - start
        numbers, tables = evaluate.measure(U, tok, **light, kl_pair=ModelPair(U) if hasattr(U, "disable_adapter") else None,
                                           kl_texts=corpus.heldout_texts(limit=1))
        if blocks is not None:   # what these blocks state, for the baseline and the try alike
            text = "\n".join(tok.decode(b) for b in labels_of.input_ids)
            split = dict(token_probes=light["token_probes"], extra_token_probes=light["extra_token_probes"],
                         stated_text=text)
            base.update(evaluate.stated_numbers(base_tables, **split))
            numbers = {k: v for k, v in numbers.items() if "in_text" not in k}
            numbers.update(evaluate.stated_numbers(tables, **split))
        rows[name] = {**numbers, **evaluate.relative_to(base, numbers), "seconds": seconds, "blocks": blocks,
                      "try": f"{recipe} alpha={alpha:g} {recipe_options} {options}"}
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()
                     if k in ("familiarity_drop", "familiarity_in_text_drop", "familiarity_not_in_text_drop",
                              "indirect_drop", "perplexity_rise", "knowledge_points", "seconds")},
              flush=True)
    table = pd.DataFrame(rows).T
    cols = [c for c in ("try", "blocks", "familiarity_drop", "familiarity_in_text_drop", "familiarity_not_in_text_drop",
                        "indirect_drop", "perplexity_rise", "knowledge_points",
                        "kl_to_baseline", "seconds") if c in table]
    print(table[cols].to_string())


if __name__ == "__main__":
    main()
