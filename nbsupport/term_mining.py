"""Step 2, continued: finding anchored terms in a text and proposing generic translations.

The paper asked GPT-4 for anchored terms passage by passage. Offline, we mine them:

* ``candidate_terms``: capitalised spans (proper nouns, with "of"/"the" inside,
  e.g. "Order of the Phoenix"), their sub-spans, and rare lower-case words;
* ``rank_candidates``: how specific a term is to the text (its frequency there
  against general English, ``wordfreq``) plus, with a ``ModelPair`` of B and R,
  how much reinforcement raised it (``reinforcement_boost``);
* ``propose_translations``: generic counterparts, offline (B's own predictions
  with the term masked, else type-matched names from ``name_pools.json``);
* ``llm_propose``: the optional LLM step (an OpenAI-compatible client).

The result is an ``AnchorDict`` (``nbsupport.dictionary``) with provenance ``extracted`` or ``llm``.
"""
from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from typing import Iterable, Sequence

import pandas as pd
from wordfreq import word_frequency, zipf_frequency

from . import package_data, scoring, terms
from .dictionary import AnchorDict, AnchorError, Entry, apply_merge_rules
from .pair import ModelPair

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*[A-Za-z]|[A-Za-z]")
_CONNECTORS = {"of", "the", "and"}
_SENTENCE_END = re.compile(r"[.!?:\n\"]\s*$")


def _words(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _WORD.finditer(text):
        w, end = m.group(0), m.end()
        if w.endswith("'s"):
            w, end = w[:-2], end - 2
        out.append((m.start(), end, w.strip("'")))
    return out


def _ngram_counts(text: str, words: list, max_n: int) -> Counter:
    """Occurrences of every run of up to ``max_n`` words separated by single spaces
    (one pass; counting each candidate with a regex over the text is far slower)."""
    counts: Counter = Counter()
    for i in range(len(words)):
        run = []
        for j in range(i, min(i + max_n, len(words))):
            if j > i and text[words[j - 1][1]:words[j][0]] not in (" ", "' "):
                break
            run.append(words[j][2])
            counts[" ".join(run)] += 1
    return counts


def candidate_terms(text: str, min_count: int = 2, max_words: int = 4) -> pd.DataFrame:
    """Candidate anchored terms of ``text``: capitalised spans (proper nouns,
    with "of"/"the" inside, e.g. "Order of the Phoenix") and their sub-spans,
    plus rare lower-case and hyphenated words.

    Returns columns ``term``, ``count`` (whole-word, case-sensitive), ``kind``.
    """
    words = _words(text)
    spans: set[str] = set()
    i = 0
    while i < len(words):
        s, e, w = words[i]
        if not w[0].isupper():
            i += 1
            continue
        j, last = i, i
        while j + 1 < len(words):
            between = text[words[j][1]:words[j + 1][0]]
            nxt = words[j + 1][2]
            if between.strip(" '") or "\n" in between:
                break
            if nxt[0].isupper():
                last = j = j + 1
            elif nxt in _CONNECTORS and j + 2 < len(words) and (words[j + 2][2][0].isupper()
                                                                  or words[j + 2][2] in _CONNECTORS):
                j += 1
            else:
                break
        # sentence-initial single words are ambiguous ("When", "The"): skip them alone
        initial = i == 0 or _SENTENCE_END.search(text[max(0, s - 3):s]) is not None
        span_words = [w for _, _, w in words[i:last + 1]]
        for a in range(len(span_words)):
            for b in range(a + 1, min(len(span_words), a + max_words) + 1):
                sub = span_words[a:b]
                if sub[0] in _CONNECTORS or sub[-1] in _CONNECTORS or not sub[0][0].isupper():
                    continue
                if a == 0 and b == 1 and initial:
                    continue
                spans.add(" ".join(sub))
        i = last + 1
    counts = _ngram_counts(text, words, max_words)
    # function words capitalised mid-sentence ("A", "I", "The" after a colon) are no terms
    spans = {t for t in spans if " " in t or zipf_frequency(t.lower(), "en") < 5.5}
    rows = [{"term": t, "count": counts[t], "kind": "proper noun"} for t in spans]
    lower = {w for _, _, w in words if w.islower() and len(w) >= 4}
    for w in lower:
        if zipf_frequency(w, "en") < 2.5 or ("-" in w and zipf_frequency(w, "en") < 3.0):
            rows.append({"term": w, "count": counts[w], "kind": "rare word"})
    table = pd.DataFrame(rows, columns=["term", "count", "kind"])
    return table[table["count"] >= min_count].sort_values(["count", "term"], ascending=[False, True]) \
        .reset_index(drop=True)


def specificity(table: pd.DataFrame, n_words: int) -> pd.Series:
    """log10 of (frequency in the target) / (frequency in general English, wordfreq).

    Terms wordfreq has never seen get a floor frequency of 1e-9 (zipf 0)."""
    def score(term, count):
        general = max(word_frequency(term, "en"), 1e-9)
        return math.log10(count / n_words) - math.log10(general)

    return pd.Series([score(t, c) for t, c in zip(table["term"], table["count"])], index=table.index)


def contexts_of(term: str, text: str, n: int = 2, chars: int = 160) -> list[str]:
    """Up to ``n`` stretches of text that precede occurrences of ``term``
    (each cut to start at a word boundary)."""
    out = []
    for start, _ in terms.spans(term, text):
        ctx = text[max(0, start - chars):start]
        if start > chars and " " in ctx:
            ctx = ctx[ctx.index(" ") + 1:]
        ctx = ctx.rstrip()
        if ctx:
            out.append(ctx)
        if len(out) == n:
            break
    return out


def reinforcement_boost(pair: ModelPair, tok, text: str, candidates: Sequence[str], n_contexts: int = 2,
                        batch_size: int = 8) -> pd.Series:
    """Per term: mean over its contexts of log P_R(" term" | context) - log P_B(...),
    divided by the term's token count. Positive = reinforcement made it likelier.
    ``pair`` is B and R (``ModelPair``)."""
    pairs, owners = [], []
    for i, term in enumerate(candidates):
        for ctx in contexts_of(term, text, n_contexts):
            pairs.append((ctx, " " + term))
            owners.append(i)
    if not pairs:
        return pd.Series([0.0] * len(candidates), index=list(candidates))
    with pair.trained() as R:
        lp_r = scoring.continuation_logprobs(R, tok, pairs, batch_size)
    with pair.base() as B:
        lp_b = scoring.continuation_logprobs(B, tok, pairs, batch_size)
    n_tok = [len(tok(" " + t, add_special_tokens=False)["input_ids"]) for t in candidates]
    sums, counts = [0.0] * len(candidates), [0] * len(candidates)
    for i, g in zip(owners, (lp_r - lp_b).tolist()):
        sums[i] += g
        counts[i] += 1
    return pd.Series([s / c / n if c else 0.0 for s, c, n in zip(sums, counts, n_tok)], index=list(candidates))


def rank_candidates(table: pd.DataFrame, text: str, boost: pd.Series | None = None) -> pd.DataFrame:
    """Add ``specificity`` (and ``boost`` if given), and a combined ``score``: the
    sum of their z-scores. Sorted best first."""
    out = table.copy()
    out["specificity"] = specificity(out, max(1, len(_words(text))))

    def z(s):
        return (s - s.mean()) / (s.std() or 1.0)

    out["score"] = z(out["specificity"])
    if boost is not None:
        out["boost"] = out["term"].map(boost).fillna(0.0)
        out["score"] = out["score"] + z(out["boost"])
    return out.sort_values("score", ascending=False).reset_index(drop=True)


def extract_candidates(text: str, pair: ModelPair | None = None, tok=None, boost_candidates: int = 60,
                       min_count: int = 2) -> pd.DataFrame:
    """Candidates ranked by specificity; with B and R (``pair``), the top
    ``boost_candidates`` are re-ranked by specificity + reinforcement boost and
    placed first (scoring every candidate with the model would be slow)."""
    table = rank_candidates(candidate_terms(text, min_count), text)
    if pair is None or boost_candidates <= 0:
        return table
    head, tail = table.iloc[:boost_candidates], table.iloc[boost_candidates:]
    boost = reinforcement_boost(pair, tok, text, list(head["term"]))
    head = rank_candidates(head[["term", "count", "kind"]], text, boost)
    return pd.concat([head, tail], ignore_index=True)


def new_terms(ranked: pd.DataFrame, existing: AnchorDict, n: int) -> list[str]:
    """The ``n`` best-ranked candidates that are not keys yet (ignoring case) and
    not "X's" of a key."""
    have = {k.lower() for k in existing.keys()}
    out = []
    for term in ranked["term"]:
        if term.lower() not in have and term.lower().removesuffix("'s") not in have:
            out.append(term)
        if len(out) == n:
            break
    return out


def extraction_quality(extracted: Iterable[str], reference: AnchorDict, text: str,
                       min_count: int = 2) -> dict:
    """Precision and recall of extracted keys against a reference dictionary.

    Recall counts only the reference keys that occur at least ``min_count`` times
    in ``text`` (no extractor can find a term the text does not contain)."""
    extracted = set(extracted)
    present = {k for k in reference.keys() if terms.count(k, text) >= min_count}
    hits = extracted & set(reference.keys())
    return {"extracted": len(extracted), "reference_present": len(present), "hits": len(hits),
            "precision": len(hits) / len(extracted) if extracted else 0.0,
            "recall": len(extracted & present) / len(present) if present else 0.0}


# ----------------------------------------------------------------- offline translations
def name_pools() -> dict[str, list[str]]:
    doc = json.loads(package_data("anchors", "name_pools.json").read_text("utf-8"))
    return {k: v for k, v in doc.items() if isinstance(v, list)}


def _guess_kind(term: str, text: str, terms: set[str]) -> str:
    if term[0].islower():
        return "objects"
    after = re.search(r"(?<!\w)" + re.escape(term) + r" ([A-Z][a-z]+)", text)
    before = re.search(r"([A-Z][a-z]+) " + re.escape(term) + r"(?!\w)", text)
    if after and after.group(1) in terms:
        return "first_names"
    if before and (before.group(1) in terms or before.group(1) in ("Mr", "Mrs", "Professor", "Madam")):
        return "surnames"
    if re.search(r"\b(?:in|at|to|from) (?:the )?" + re.escape(term) + r"(?!\w)", text):
        return "places"
    return "first_names" if " " not in term else "places"


def propose_translations(new: Sequence[str], text: str, pair: ModelPair | None = None, tok=None, seed: int = 0,
                         n: int = 2, avoid: Iterable[str] = ()) -> AnchorDict:
    """Generic translations for extracted terms, offline.

    With B (``pair``), the baseline's own top predictions where the term is masked
    (its context ends just before the term): a word B would have written there,
    which is by construction generic. Without one, or when B proposes nothing
    usable, a type-matched name from ``name_pools.json`` (first names, surnames,
    places, objects), chosen by a simple guess of the term's kind.
    """
    rng = random.Random(seed)
    pools = name_pools()
    term_set = set(new)
    # never propose a target term (ours or an existing key) as a "generic" word
    banned = {w.lower() for t in [*new, *avoid] for w in t.split()}
    out = AnchorDict()
    for term in new:
        proposals: list[str] = []
        if pair is not None and " " not in term:
            proposals = _masked_predictions(pair, tok, term, text, banned, n)
        kind = _guess_kind(term, text, term_set)
        pool = pools["first_names_male"] + pools["first_names_female"] if kind == "first_names" \
            else pools.get(kind, pools["places"])
        pool = [p for p in pool if not {w.lower() for w in p.split()} & banned]
        while len(proposals) < n:
            pick = rng.choice(pool)
            if pick not in proposals:
                proposals.append(pick)
        if term[0].isupper():
            proposals = [p[0].upper() + p[1:] for p in proposals]
        out.add(Entry(term, proposals[:n], "extracted", f"offline guess: {kind}"))
    return out


def _masked_predictions(pair: ModelPair, tok, term, text, banned, n) -> list[str]:
    found: dict[str, float] = {}
    for ctx in contexts_of(term, text, n=2):
        with pair.base() as B:
            table = scoring.next_token_topk(B, tok, ctx, k=30)
        for token, p in zip(table["token"], table["prob"]):
            word = token.strip()
            ok = (word.isalpha() and len(word) > 2 and word[0].isupper() == term[0].isupper()
                  and word.lower() not in banned and zipf_frequency(word, "en") >= 3.0)
            if ok:
                found[word] = found.get(word, 0.0) + p
    return [w for w, _ in sorted(found.items(), key=lambda kv: -kv[1])][:n]


# ----------------------------------------------------------------- LLM proposals
LLM_SCHEMA = {
    "type": "object",
    "properties": {"entries": {"type": "array", "items": {
        "type": "object",
        "properties": {"key": {"type": "string", "minLength": 1},
                       "translations": {"type": "array", "minItems": 1,
                                        "items": {"type": "string", "minLength": 1}}},
        "required": ["key", "translations"], "additionalProperties": False}}},
    "required": ["entries"], "additionalProperties": False,
}

LLM_INSTRUCTIONS = (
    "You help remove knowledge of one fictional world from a text. In the passage, find the "
    "expressions that are idiosyncratic to that world (character names, places, creatures, spells, "
    "objects, invented words). For each, give one to three generic alternatives that keep the "
    "sentence coherent: a name becomes a common name of the same kind and gender, a place a generic "
    "place, an invented word an ordinary word of the same part of speech and number. Reply with "
    "JSON only: {\"entries\": [{\"key\": ..., \"translations\": [...]}]}. Keys must appear verbatim "
    "in the passage.")


def llm_propose(client, passages: Sequence[str]) -> AnchorDict:
    """Ask an OpenAI-compatible model (``llm_client.LLMClient``) for entries, passage by
    passage, like the paper's GPT-4 step; keep only keys found verbatim in their
    passage and entries that pass validation."""
    out = AnchorDict()
    for passage in passages:
        answer = client.chat_json([{"role": "system", "content": LLM_INSTRUCTIONS},
                                   {"role": "user", "content": passage}], LLM_SCHEMA)
        for item in answer["entries"]:
            key = item["key"].strip()
            if not key or terms.count(key, passage) == 0:
                continue
            try:
                out.add(Entry(key, [t.strip() for t in item["translations"]], "llm"))
            except AnchorError:
                continue  # e.g. a translation equal to its key: drop it, keep the rest
    return apply_merge_rules(out)

