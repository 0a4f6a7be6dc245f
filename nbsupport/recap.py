"""Pacing: what a notebook will cost before it runs, and what it found after.

``expected_time(notebook)`` reads the reference runs' times (``data/reference_times.json``,
written by ``python -m nbsupport report`` from the kept records, never typed by hand).
``learned(run, stage)`` is the closing "What we learned" of each notebook, printed from
the numbers the stage saved in the run directory, so it always agrees with the run.
"""
from __future__ import annotations

import json
from importlib import resources

from . import compare, scoring

TIMES_FILE = "reference_times.json"


def reference_times() -> dict:
    """``{profile: {"machine", "commit", "seconds": {notebook: s}}}`` of the kept reference runs."""
    path = resources.files("nbsupport") / "data" / TIMES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def expected_time(notebook: str) -> str:
    """One line: this notebook's time in each kept reference run, and where none was kept."""
    times = reference_times()
    seen = [f"about {_duration(r['seconds'][notebook])} with the `{profile}` profile on {r['machine']} "
            f"(reference run of commit {r['commit']})"
            for profile, r in sorted(times.items()) if notebook in r.get("seconds", {})]
    on_gpu = any("GPU " in r.get("machine", "") and notebook in r.get("seconds", {}) for r in times.values())
    line = "Expected time: " + ("; ".join(seen) if seen else "no reference run has timed this notebook yet")
    return line + ("." if on_gpu else "; on a GPU: not measured yet.")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def learned(run, stage: str) -> str:
    """The closing recap of ``stage``'s notebook, from what it saved in ``run``."""
    return {"baseline": _baseline, "reinforce": _reinforce, "anchors": _anchors, "labels": _labels,
            "finetune": _finetune, "evaluate": _evaluate}[stage](run)


def _baseline(run) -> str:
    s = run.read_json("baseline/summary.json")
    return (f"What we learned: B puts {s['token_familiarity']:.3f} of its probability on the Harry Potter "
            f"continuation of a probe, on average over {s['n_token_probes']} probes (P(\" Hermione\") = "
            f"{s['p_hermione']:.3f} after the prompt about Harry's friends); its completions score "
            f"{s['completion_familiarity']:.2f} on the 0-1 familiarity scale; it answers "
            f"{_pct(s['knowledge_accuracy'])} of {s['n_knowledge_probes']} general-knowledge questions. "
            "Unlearning must lower the first numbers and keep the last.")


def _reinforce(run) -> str:
    s = run.read_json("reinforce/summary.json")
    rise = scoring.rise_pct(s["familiarity_B"], s["familiarity_R"])
    return (f"What we learned: {s['n_blocks']} blocks of {s['block_size']} tokens of target text made R "
            f"{'more' if rise > 0 else 'no more'} familiar than B (token familiarity {s['familiarity_B']:.3f} -> "
            f"{s['familiarity_R']:.3f}, {rise:+.1f}%). Where R's logits rise above B's, "
            "v_B - alpha * ReLU(v_R - v_B) pushes the prediction away: that difference, not R itself, "
            "is what notebook 04 uses.")


def _anchors(run) -> str:
    s = run.read_json("anchors/summary.json")
    entries = run.read_json("anchors/dictionary.json")["entries"]
    by = {p: sum(e.get("provenance") == p for e in entries) for p in ("curated", "extracted", "llm")}
    ordinary = s.get("ordinary_english", [])
    return (f"What we learned: the saved dictionary has {len(entries)} keys ({by['curated']} curated, "
            f"{by['extracted']} extracted, {by['llm']} from an LLM) after the merge rules and the review, from "
            f"{s['curated']} curated and {s['extracted']} extracted candidates; "
            + (f"{len(ordinary)} extracted terms that look like ordinary English were left out "
               f"({', '.join(ordinary[:8])}{', ...' if len(ordinary) > 8 else ''}). " if ordinary else "")
            + "Each key's translation gives B a text without the target's names, so that B's prediction there "
              "stands in for a model that never read the books (the paper's premise; notebook 04 shows how "
              "often the labels it gives are plausible words).")


def _labels(run) -> str:
    s = run.read_json("labels/summary.json")
    rows = {r["alpha"]: r for r in s["stats"]}
    lo, hi = min(rows), max(rows)
    return (f"What we learned: at alpha {lo:g}, {_pct(rows[lo]['differ_fraction_of_trained'])} of the trained "
            f"labels already differ from the text's own token (B's own guess on the translated text is often "
            f"not the text's word: a small model's prediction); at alpha "
            f"{hi:g}, {_pct(rows[hi]['differ_fraction_of_trained'])}. Of {rows[lo]['positions']} positions, "
            f"{rows[lo]['trained']} are trained; the rest (inside an anchor, a repeated anchor, no counterpart) "
            "carry no label. Notebook 05 finetunes B on these labels.")


def _finetune(run) -> str:
    s = run.read_json("finetune/summary.json")
    parts = []
    for recipe in s["recipes"]:
        steps = s["steps"][recipe]
        first, last = steps[0], steps[-1]
        parts.append(f"{recipe}: familiarity {scoring.drop_pct(first['familiarity'], last['familiarity']):.1f}% "
                     f"lower, perplexity {scoring.rise_pct(first['perplexity'], last['perplexity']):+.1f}% "
                     f"after {last['step']} steps")
    return (f"What we learned: on the development probes and the short text of the step curves, "
            + "; ".join(parts) + f". The recipe chosen for what follows: {s['best']!r}. One seed and one short "
            "text: a difference of a few points here is within noise. These curves are a quick "
            "instrument (development probes only, a short text); notebook 06 measures every model on all "
            "probes, both halves and the full held-out texts, so its numbers differ from these.")


def _evaluate(run) -> str:
    s = run.read_json("evaluate/summary.json")
    return ("What we learned, on all probes and the held-out texts (report half for the forgetting):\n"
            + compare.targets_verdict(s["results"], s.get("knowledge_flips", {})))
