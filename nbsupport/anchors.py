"""Step 2: the anchored-terms dictionary (ALGORITHM.md section 3).

A dictionary maps idiosyncratic expressions of the target text to generic
counterparts that keep the text coherent (Hogwarts -> Mystic Academy, Harry ->
Jon). It comes from three sources, each recorded as an entry's provenance:

* ``curated``: written by hand (the built-in Harry Potter dictionary);
* ``extracted``: found offline in any text (``candidate_terms``, ``rank_candidates``)
  with translations proposed offline (``propose_translations``);
* ``llm``: proposed by an OpenAI-compatible model (``llm_propose``), like the
  paper's GPT-4 step; off by default.

``translate`` replaces anchored terms in a block of text: longest match first,
on word boundaries, one translation per key per block (seeded).
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from . import package_data

PROVENANCES = ("curated", "extracted", "llm")


class AnchorError(ValueError):
    """An invalid dictionary entry; the message names the key (and line, for CSV)."""


@dataclass
class Entry:
    key: str
    translations: list[str]
    provenance: str = "curated"
    note: str = ""


# ----------------------------------------------------------------- the dictionary
class AnchorDict:
    """Key -> Entry, in insertion order. Build with ``AnchorDict(entries)``."""

    def __init__(self, entries: Iterable[Entry] = ()):
        self.entries: dict[str, Entry] = {}
        for e in entries:
            self.add(e)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __getitem__(self, key: str) -> Entry:
        return self.entries[key]

    def keys(self) -> list[str]:
        return list(self.entries)

    def add(self, entry: Entry, where: str = "") -> None:
        """Add an entry, or merge its translations into an existing key."""
        entry = Entry(entry.key.strip() if isinstance(entry.key, str) else entry.key,
                      [t.strip() if isinstance(t, str) else t for t in entry.translations],
                      entry.provenance, entry.note or "")
        check_entry(entry, where)
        if entry.key in self.entries:
            old = self.entries[entry.key]
            old.translations += [t for t in entry.translations if t not in old.translations]
        else:
            self.entries[entry.key] = entry

    def remove(self, key: str) -> None:
        self.entries.pop(key, None)

    def merged(self, other: "AnchorDict") -> "AnchorDict":
        """Union of both (translations of a shared key joined), with the merge rules applied.

        An entry of ``other`` that would shadow this dictionary (its key occurs in one
        of our translations, or its translations contain one of our keys) is left
        out: the entries already here win. Their keys are listed in ``.dropped``."""
        out = AnchorDict(Entry(**asdict(e)) for e in self.entries.values())
        out.dropped = []
        ours = _key_regex(self.keys())
        our_translations = " \n ".join(t for e in self.entries.values() for t in e.translations)
        for e in other.entries.values():
            clash = (_count(e.key, our_translations) > 0
                     or (ours is not None and any(ours.search(t) for t in e.translations))
                     or (e.key not in out and e.key.lower() in {k.lower() for k in out.keys()}))
            if clash:
                out.dropped.append(e.key)
            else:
                out.add(Entry(**asdict(e)))
        return apply_merge_rules(out)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"key": e.key, "translations": " | ".join(e.translations),
                              "provenance": e.provenance, "note": e.note} for e in self.entries.values()])

    # --- JSON and CSV
    def to_json(self) -> str:
        return json.dumps({"version": 1, "entries": [asdict(e) for e in self.entries.values()]},
                          indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "dictionary") -> "AnchorDict":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnchorError(f"{where} is not valid JSON: {err}") from None
        out = cls()
        for i, item in enumerate(doc.get("entries", []) if isinstance(doc, dict) else []):
            if not isinstance(item, dict) or "key" not in item:
                raise AnchorError(f"{where}: entry {i} has no 'key'")
            out.add(Entry(item["key"], list(item.get("translations") or []), item.get("provenance", "curated"),
                          item.get("note", "")), where=f"{where}, entry {i}")
        check_shadowing(out)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["key", "translations", "provenance", "note"])
        for e in self.entries.values():
            writer.writerow([e.key, " | ".join(e.translations), e.provenance, e.note])
        return buf.getvalue()

    @classmethod
    def from_csv(cls, text: str, where: str = "dictionary.csv") -> "AnchorDict":
        """CSV for hand editing: key, translations (separated by " | "), provenance, note."""
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or [h.strip().lower() for h in rows[0][:2]] != ["key", "translations"]:
            raise AnchorError(f"{where}: the first line must be the header key,translations,provenance,note")
        out = cls()
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            row = row + [""] * (4 - len(row))
            translations = [t for t in (s.strip() for s in row[1].split("|"))]
            out.add(Entry(row[0], translations, row[2].strip() or "curated", row[3].strip()),
                    where=f"{where}, line {line}")
        check_shadowing(out)
        return out

    def save(self, path: str | Path) -> Path:
        from .runs import write_text_atomic
        path = Path(path)
        return write_text_atomic(path, self.to_csv() if path.suffix == ".csv" else self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "AnchorDict":
        path = Path(path)
        if not path.is_file():
            raise AnchorError(f"dictionary file {path} not found")
        text = path.read_text("utf-8")
        return cls.from_csv(text, str(path)) if path.suffix == ".csv" else cls.from_json(text, str(path))


def check_entry(entry: Entry, where: str = "") -> None:
    at = f"{where}: " if where else ""
    if not isinstance(entry.key, str) or not entry.key:
        raise AnchorError(f"{at}empty key")
    if not entry.translations:
        raise AnchorError(f"{at}key {entry.key!r} has no translation")
    for t in entry.translations:
        if not isinstance(t, str) or not t:
            raise AnchorError(f"{at}key {entry.key!r} has an empty translation")
        if t.lower() == entry.key.lower():
            raise AnchorError(f"{at}key {entry.key!r} is translated to itself")
    if entry.provenance not in PROVENANCES:
        raise AnchorError(f"{at}key {entry.key!r}: provenance must be one of {PROVENANCES}")


def check_shadowing(d: AnchorDict) -> None:
    """Refuse keys that shadow each other: two keys equal but for case (only one
    could ever match a capitalised occurrence), or a translation containing
    another key (the generic text would still carry the target term)."""
    seen: dict[str, str] = {}
    for key in d.keys():
        low = key.lower()
        if low in seen:
            raise AnchorError(f"keys {seen[low]!r} and {key!r} differ only in case: keep one")
        seen[low] = key
    pattern = _key_regex(d.keys())
    for e in d.entries.values():
        for t in e.translations:
            m = pattern.search(t) if pattern else None
            if m and m.group(0) != e.key:
                raise AnchorError(f"key {e.key!r}: translation {t!r} contains the key {m.group(0)!r}")


def apply_merge_rules(d: AnchorDict) -> AnchorDict:
    """The paper's merge rules: drop "X's" when "X" is a key; drop a multi-word
    key all of whose words are keys (translating word by word covers it)."""
    keys = set(d.keys())
    for key in list(d.keys()):
        if key.endswith("'s") and key[:-2] in keys:
            d.remove(key)
        elif " " in key and all(w in keys for w in key.split()):
            d.remove(key)
    return d


def builtin_dictionary() -> AnchorDict:
    """The curated dictionary for the built-in Harry Potter target (written for this course)."""
    return AnchorDict.load(package_data("anchors", "hp_curated.json"))


def starting_dictionary(spec: str, target_text: str = "builtin") -> AnchorDict:
    """The dictionary a run starts from: ``"auto"`` (the curated one for the
    built-in target, none for your own text), ``"builtin"``, ``"none"``, or a
    .json/.csv file."""
    if spec == "auto":
        spec = "builtin" if target_text == "builtin" else "none"
    if spec == "builtin":
        return builtin_dictionary()
    if spec == "none":
        return AnchorDict()
    return AnchorDict.load(spec)


# ----------------------------------------------------------------- translation
@dataclass(frozen=True)
class Anchor:
    """One replaced occurrence: original span [start, end), its span in the
    translated text [new_start, new_end), and whether it is the key's first
    occurrence in the block."""
    key: str
    start: int
    end: int
    new_start: int
    new_end: int
    translation: str
    first: bool


@dataclass
class Translation:
    original: str
    text: str
    anchors: list[Anchor] = field(default_factory=list)


def _variants(key: str) -> list[str]:
    # A lower-case key also matches capitalised at the start of a sentence.
    return [key, key[0].upper() + key[1:]] if key[0].islower() else [key]


def _key_regex(keys: Iterable[str]) -> re.Pattern | None:
    variants = sorted({v for k in keys for v in _variants(k)}, key=len, reverse=True)
    if not variants:
        return None
    # Longest first, so "Harry Potter" wins over "Harry"; \w boundaries, so "Ron"
    # matches in "Ron's" but not in "Ronald" or "iron".
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, variants)) + r")(?!\w)")


class Translator:
    """Compiled matcher for one dictionary; ``translate`` is cheap to call per block."""

    def __init__(self, dictionary: AnchorDict):
        self.dictionary = dictionary
        self.pattern = _key_regex(dictionary.keys())
        self.lookup = {v: k for k in dictionary.keys() for v in _variants(k)}

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, key) of every anchored term in ``text``, left to right."""
        if self.pattern is None:
            return []
        return [(m.start(), m.end(), self.lookup[m.group(0)]) for m in self.pattern.finditer(text)]

    def translate(self, text: str, seed: int = 0) -> Translation:
        """Replace every anchored term; one translation per key per call (seeded)."""
        rng = random.Random(seed)
        chosen: dict[str, str] = {}
        parts, anchors, at, shift = [], [], 0, 0
        for start, end, key in self.find(text):
            first = key not in chosen
            if first:
                chosen[key] = rng.choice(self.dictionary[key].translations)
            translation = chosen[key]
            before = text[:start].rstrip(" \t")
            sentence_start = not before or before[-1] in '\n.!?"'
            if translation[0].islower() and ((key[0].islower() and text[start].isupper()) or sentence_start):
                translation = translation[0].upper() + translation[1:]
            parts.append(text[at:start])
            new_start = start + shift
            parts.append(translation)
            anchors.append(Anchor(key, start, end, new_start, new_start + len(translation), translation, first))
            shift += len(translation) - (end - start)
            at = end
        parts.append(text[at:])
        return Translation(text, "".join(parts), anchors)


def translate(text: str, dictionary: AnchorDict, seed: int = 0) -> Translation:
    return Translator(dictionary).translate(text, seed)


# ----------------------------------------------------------------- offline extraction
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


def _count(term: str, text: str) -> int:
    return len(re.findall(r"(?<!\w)" + re.escape(term) + r"(?!\w)", text))


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
    from wordfreq import zipf_frequency

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
    from wordfreq import word_frequency

    def score(term, count):
        general = max(word_frequency(term, "en"), 1e-9)
        return math.log10(count / n_words) - math.log10(general)

    return pd.Series([score(t, c) for t, c in zip(table["term"], table["count"])], index=table.index)


def contexts_of(term: str, text: str, n: int = 2, chars: int = 160) -> list[str]:
    """Up to ``n`` stretches of text that precede occurrences of ``term``
    (each cut to start at a word boundary)."""
    out = []
    for m in re.finditer(r"(?<!\w)" + re.escape(term) + r"(?!\w)", text):
        ctx = text[max(0, m.start() - chars):m.start()]
        if m.start() > chars and " " in ctx:
            ctx = ctx[ctx.index(" ") + 1:]
        ctx = ctx.rstrip()
        if ctx:
            out.append(ctx)
        if len(out) == n:
            break
    return out


def reinforcement_boost(model, tok, text: str, terms: Sequence[str], n_contexts: int = 2,
                        batch_size: int = 8, base=None) -> pd.Series:
    """Per term: mean over its contexts of log P_R(" term" | context) - log P_B(...),
    divided by the term's token count. Positive = reinforcement made it likelier."""
    from . import probe
    from .reinforce import base_view

    pairs, owners = [], []
    for i, term in enumerate(terms):
        for ctx in contexts_of(term, text, n_contexts):
            pairs.append((ctx, " " + term))
            owners.append(i)
    if not pairs:
        return pd.Series([0.0] * len(terms), index=list(terms))
    lp_r = probe.continuation_logprobs(model, tok, pairs, batch_size)
    with base_view(model, base):
        lp_b = probe.continuation_logprobs(base or model, tok, pairs, batch_size)
    n_tok = [len(tok(" " + t, add_special_tokens=False)["input_ids"]) for t in terms]
    sums, counts = [0.0] * len(terms), [0] * len(terms)
    for i, g in zip(owners, (lp_r - lp_b).tolist()):
        sums[i] += g
        counts[i] += 1
    return pd.Series([s / c / n if c else 0.0 for s, c, n in zip(sums, counts, n_tok)], index=list(terms))


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


def extract_candidates(text: str, model=None, tok=None, base=None, boost_candidates: int = 60,
                       min_count: int = 2) -> pd.DataFrame:
    """Candidates ranked by specificity; with a reinforced model, the top
    ``boost_candidates`` are re-ranked by specificity + reinforcement boost and
    placed first (scoring every candidate with the model would be slow)."""
    table = rank_candidates(candidate_terms(text, min_count), text)
    if model is None or boost_candidates <= 0:
        return table
    head, tail = table.iloc[:boost_candidates], table.iloc[boost_candidates:]
    boost = reinforcement_boost(model, tok, text, list(head["term"]), base=base)
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
    present = {k for k in reference.keys() if _count(k, text) >= min_count}
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


def propose_translations(terms: Sequence[str], text: str, model=None, tok=None, seed: int = 0,
                         n: int = 2, base=None, avoid: Iterable[str] = ()) -> AnchorDict:
    """Generic translations for extracted terms, offline.

    With a model, the baseline's own top predictions where the term is masked
    (its context ends just before the term): a word B would have written there,
    which is by construction generic. Without one, or when B proposes nothing
    usable, a type-matched name from ``name_pools.json`` (first names, surnames,
    places, objects), chosen by a simple guess of the term's kind.
    """
    rng = random.Random(seed)
    pools = name_pools()
    term_set = set(terms)
    # never propose a target term (ours or an existing key) as a "generic" word
    banned = {w.lower() for t in [*terms, *avoid] for w in t.split()}
    out = AnchorDict()
    for term in terms:
        proposals: list[str] = []
        if model is not None and " " not in term:
            proposals = _masked_predictions(model, tok, term, text, banned, n, base)
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


def _masked_predictions(model, tok, term, text, banned, n, base=None) -> list[str]:
    from wordfreq import zipf_frequency

    from . import probe
    from .reinforce import base_view

    found: dict[str, float] = {}
    for ctx in contexts_of(term, text, n=2):
        with base_view(model, base):
            table = probe.next_token_topk(base or model, tok, ctx, k=30)
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
    """Ask an OpenAI-compatible model (``llm.LLMClient``) for entries, passage by
    passage, like the paper's GPT-4 step; keep only keys found verbatim in their
    passage and entries that pass validation."""
    out = AnchorDict()
    for passage in passages:
        answer = client.chat_json([{"role": "system", "content": LLM_INSTRUCTIONS},
                                   {"role": "user", "content": passage}], LLM_SCHEMA)
        for item in answer["entries"]:
            key = item["key"].strip()
            if not key or _count(key, passage) == 0:
                continue
            try:
                out.add(Entry(key, [t.strip() for t in item["translations"]], "llm"))
            except AnchorError:
                continue  # e.g. a translation equal to its key: drop it, keep the rest
    return apply_merge_rules(out)


# ----------------------------------------------------------------- review
def apply_review(dictionary: AnchorDict, decisions: dict[str, dict]) -> AnchorDict:
    """Apply a reviewer's decisions: ``{key: {"accept": bool, "translations": "a | b"}}``.

    Rejected keys are removed; edited translations replace the old ones (and are
    validated, so an empty edit raises AnchorError naming the key)."""
    out = AnchorDict(Entry(**asdict(e)) for e in dictionary.entries.values())
    for key, decision in decisions.items():
        if key not in out:
            raise AnchorError(f"review names an unknown key {key!r}")
        if not decision.get("accept", True):
            out.remove(key)
            continue
        if "translations" in decision:
            entry = out[key]
            new = Entry(key, [t.strip() for t in decision["translations"].split("|")], entry.provenance, entry.note)
            check_entry(new)
            out.entries[key] = new
    check_shadowing(out)
    return out
