"""Offline dictionary building from the text alone (issue 15): how well
``term_mining`` finds the anchored terms, types them, and translates them.

On two texts, each against the curated dictionary (``hp_curated.json``) as reference:

* the built-in corpus (``corpus.builtin_corpus()``, ~72K tokens);
* ``benchmarks/data/forum_thread_reread.md``, a fan-forum thread written for this
  benchmark only (~3,800 words, no book text), where the reference is the curated
  keys occurring at least twice in it.

Printed for each:

* core recall: the 30 most frequent reference keys in the text, found in the
  top 100 candidates (the notebook's default ``n_extracted``); goal 100%;
* precision and recall at k = 100, 200, 400 (``extraction_quality``);
* type agreement: inferred type = curated type (notes mapped by ``coarse_type``;
  "idiom" entries skipped), over the top-400 candidates that are curated keys;
  goal >= 90% on the built-in corpus;
* for the dictionary ``propose_translations`` builds from the top 100: the share
  of translations that are a key, a piece of a key, a target term or only
  function words, checked independently of the extractor's own rules against
  the extracted keys, every curated key and the text's specific candidates
  (goal 0), and key/translation type agreement (the type a translation reads as,
  ``translation_type``, equal to the key's type; goal >= 90%).

Offline only by default (no model). ``--with-model RUN_DIR`` adds the
reinforcement boost and B's masked proposals from a notebook 02 run's B and R.

    .venv/bin/python benchmarks/extraction_quality.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from wordfreq import zipf_frequency

from nbsupport import corpus, dictionary, term_mining, terms
from nbsupport.dictionary import AnchorDict

SECOND_TEXT = Path(__file__).parent / "data" / "forum_thread_reread.md"
KS = (100, 200, 400)


def core_keys(reference: AnchorDict, text: str, n: int = 30) -> list[str]:
    counts = {k: terms.count(k, text) for k in reference.keys()}
    present = [k for k in reference.keys() if counts[k] >= 2]
    return sorted(present, key=lambda k: (-counts[k], k))[:n]


def translation_issues(d: AnchorDict, reference: AnchorDict, text: str) -> list[tuple[str, str, str]]:
    """(key, translation, issue) for every translation that is a key, a piece of one,
    a target term or only function words, by checks of this benchmark's own."""
    keys = set(d.keys()) | set(reference.keys())
    table = term_mining.candidate_terms(text, min_count=2)
    table = table.assign(specificity=term_mining.specificity(table, len(text.split())))
    targets = set(table.loc[table["specificity"] >= 2.0, "term"])
    low_keys = {k.lower() for k in keys} | {t.lower() for t in targets}
    # words that point at the target: one-word keys, and rare words of longer ones
    pointed = {w.lower() for k in keys | targets for w in k.replace("'s", "").split()
               if len(w) >= 3 and (k == w or zipf_frequency(w, "en") < 3.0)}
    issues = []
    for key in d.keys():
        for t in d[key].translations:
            words = [w.strip("'").lower() for w in t.replace("'s", "").split()]
            problem = ""
            if t.lower() in low_keys:
                problem = "is a key or target term"
            elif all(w in term_mining.FUNCTION_WORDS for w in words):
                problem = "only function words"
            else:
                for w in words:
                    if w in key.lower().split() and w not in pointed:
                        continue    # the key's own ordinary word ("Hat" of "Sorting Hat")
                    if w in pointed:
                        problem = f"word {w!r} of a key or target term"
                    elif zipf_frequency(w, "en") < 4.0 and any(w in p and w != p for p in pointed):
                        problem = f"{w!r} is a piece of a key or target word"
                    elif any(p in w and p != w for p in pointed):
                        problem = f"{w!r} contains a key or target word"
                    if problem:
                        break
            if problem:
                issues.append((key, t, problem))
    return issues


def evaluate(name: str, text: str, reference: AnchorDict, pair=None, tok=None, n_dict: int = 100) -> None:
    print(f"\n=== {name}: {len(text.split()):,} words")
    start = time.time()
    ranked = term_mining.extract_candidates(text, pair, tok)
    print(f"candidates: {len(ranked)} ranked in {time.time() - start:.1f} s")
    order = {t: i for i, t in enumerate(ranked["term"])}
    core = core_keys(reference, text)
    found = [k for k in core if order.get(k, 10 ** 9) < 100]
    missing = [(k, order.get(k)) for k in core if k not in found]
    print(f"core recall (30 most frequent reference keys in the top 100): {len(found)}/{len(core)} "
          f"= {len(found) / len(core):.1%}" + (f"; missing (rank): {missing}" if missing else ""))
    for k in KS:
        q = term_mining.extraction_quality(ranked["term"].head(k), reference, text)
        print(f"  top {k:>3}: precision {q['precision']:.1%} ({q['hits']}/{q['extracted']}), "
              f"recall {q['recall']:.1%} of {q['reference_present']} reference keys present (>= 2 uses)")
    for k in (100, 400):
        head = ranked.head(k)
        pairs = [(t, kind, term_mining.coarse_type(reference[t].note)) for t, kind in zip(head["term"], head["type"])
                 if t in reference and term_mining.coarse_type(reference[t].note)]
        agree = sum(a == b for _, a, b in pairs)
        print(f"  type agreement with curated types, top {k}: {agree}/{len(pairs)} = {agree / max(1, len(pairs)):.1%}")
        if k == 100:
            wrong = [(t, a, b) for t, a, b in pairs if a != b]
            print(f"    disagreements (term, inferred, curated): {wrong}")
    start = time.time()
    new = term_mining.new_terms(ranked, AnchorDict(), n_dict)
    d = term_mining.propose_translations(new, text, pair, tok, ranked=ranked)
    n_trans = sum(len(d[k].translations) for k in d.keys())
    print(f"dictionary: {len(d)} keys, {n_trans} translations in {time.time() - start:.1f} s; "
          f"{len(term_mining.rejections(d))} candidate translations rejected on the way")
    issues = translation_issues(d, reference, text)
    print(f"  invalid translations (key, key piece, target term, function word): {len(issues)}/{n_trans} "
          f"= {len(issues) / max(1, n_trans):.1%}" + (f": {issues[:10]}" if issues else ""))
    own, curated_pairs = [], []
    for key in d.keys():
        kind = term_mining.coarse_type(d[key].note)
        cur = term_mining.coarse_type(reference[key].note) if key in reference else ""
        for t in d[key].translations:
            reads = term_mining.translation_type(t)
            own.append((key, t, kind, reads))
            if cur:
                curated_pairs.append((key, t, cur, reads))
    ok = sum(k == r for _, _, k, r in own)
    print(f"  key/translation type agreement (translation reads as the key's inferred type): "
          f"{ok}/{len(own)} = {ok / max(1, len(own)):.1%}")
    bad = [(k, t, a, r or "?") for k, t, a, r in own if a != r]
    if bad:
        print(f"    mismatches (key, translation, key type, reads as): {bad[:12]}")
    ok = sum(k == r for _, _, k, r in curated_pairs)
    print(f"  key/translation type agreement against the key's curated type: "
          f"{ok}/{len(curated_pairs)} = {ok / max(1, len(curated_pairs)):.1%}")
    persons_as_places = [(k, t) for k, t, a, r in own if a == "person" and r == "place"]
    print(f"  persons translated as places: {len(persons_as_places)}")
    print("  sample:", "; ".join(f"{k} -> {' | '.join(d[k].translations)}" for k in d.keys()[:12]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--with-model", metavar="RUN_DIR", default=None,
                        help="a notebook 02 run directory: add the reinforcement boost and B's proposals")
    parser.add_argument("--model", default="embedded", help="the model spec the run reinforced")
    parser.add_argument("--method", default="lora", choices=["lora", "full"])
    args = parser.parse_args()
    pair = tok = None
    if args.with_model:
        from nbsupport import reinforce, runs
        pair, tok = reinforce.load_reinforced(runs.open_run(args.with_model), args.model, args.method)
        pair.eval()
    reference = dictionary.builtin_dictionary()
    evaluate("built-in corpus", corpus.builtin_corpus(), reference, pair, tok)
    evaluate(f"second text ({SECOND_TEXT.name})", SECOND_TEXT.read_text("utf-8"), reference, pair, tok)


if __name__ == "__main__":
    main()
