"""The anchored-terms dictionary and its translator (notebook 03; docs/ALGORITHM.md section 3).

A dictionary maps idiosyncratic expressions of the target text to generic
counterparts that keep the text coherent (Hogwarts -> Mystic Academy, Harry ->
Jon). Each entry records where it came from: ``curated`` (written by hand, the
built-in Harry Potter dictionary), ``extracted`` (found offline in a text:
``anchors.ranking`` and ``anchors.proposals``) or ``llm`` (proposed by an external
model, like the paper's GPT-4: ``anchors.llm_proposals``).

Here: ``AnchorDict`` (JSON and CSV files, merging), the rules every entry obeys
(``check_entry``, ``check_shadowing``, the paper's ``apply_merge_rules``), the
dictionary a run starts from (``starting_dictionary``) and a reviewer's decisions
(``apply_review``). ``Translator.translate`` replaces anchored terms in a block of
text: longest match first, on word boundaries, one translation per key per block
(seeded). This module is all that label generation (notebook 04) needs; finding
new terms is the job of the rest of ``anchors``.
"""
from __future__ import annotations

import csv
import io
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from .. import package_data, terms
from ..runs import write_text_atomic


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
            clash = (terms.count(e.key, our_translations) > 0
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
        """Parse ``{"version": 1, "entries": [{"key", "translations", ...}]}``."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnchorError(f"{where} is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise AnchorError(f"{where}: the top level must be an object "
                              f'{{"version": 1, "entries": [...]}}, not a {type(doc).__name__}')
        unknown = sorted(set(doc) - {"version", "description", "entries"})
        if unknown or "entries" not in doc:
            raise AnchorError(f"{where}: expected the keys 'version', 'entries' (and optionally 'description')"
                              + (f"; unknown key(s) {unknown}" if unknown else "; 'entries' is missing"))
        if not isinstance(doc["entries"], list):
            raise AnchorError(f"{where}: 'entries' must be a list of {{\"key\", \"translations\"}} objects")
        out = cls()
        for i, item in enumerate(doc["entries"]):
            if not isinstance(item, dict) or "key" not in item:
                raise AnchorError(f"{where}: entry {i} has no 'key'")
            translations = item.get("translations")
            if not isinstance(translations, list):
                raise AnchorError(f"{where}, entry {i} (key {item['key']!r}): 'translations' must be a list "
                                  f"of strings, e.g. [\"Jon\"], not {translations!r}")
            out.add(Entry(item["key"], list(translations), item.get("provenance", "curated"),
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
        if not any(any(cell.strip() for cell in row) for row in rows[1:]):
            raise AnchorError(f"{where} has a header but no entries: add one line per key, "
                              "e.g. Hogwarts,Mystic Academy | Old School,curated,")
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
        path = Path(path)
        return write_text_atomic(path, self.to_csv() if path.suffix == ".csv" else self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "AnchorDict":
        path = Path(path)
        if not path.is_file():
            raise AnchorError(f"dictionary file {path} not found")
        try:
            text = path.read_text("utf-8-sig")
        except UnicodeDecodeError as err:
            raise AnchorError(f"{path} is not UTF-8 (bad byte at offset {err.start}): save it as UTF-8, "
                              f"e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`") from None
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
    d = AnchorDict.load(spec)
    if not len(d):
        raise AnchorError(f"{spec} holds no entries; for a run without anchors say "
                          "ANCHOR_DICTIONARY = 'none'")
    return d


# ----------------------------------------------------------------- the key matcher
def _variants(key: str) -> list[str]:
    # A lower-case key also matches capitalised at the start of a sentence.
    return [key, key[0].upper() + key[1:]] if key[0].islower() else [key]


def _key_regex(keys: Iterable[str]) -> re.Pattern | None:
    variants = sorted({v for k in keys for v in _variants(k)}, key=len, reverse=True)
    if not variants:
        return None
    # Longest first, so "Harry Potter" wins over "Harry"; the term matcher's word
    # boundaries, so "Ron" matches in "Ron's" but not in "Ronald" or "iron".
    return re.compile(terms.BEFORE + "(?:" + "|".join(map(re.escape, variants)) + ")" + terms.AFTER)


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
