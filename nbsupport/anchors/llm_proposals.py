"""The optional LLM step (notebook 03): an OpenAI-compatible model proposes
entries passage by passage, like the paper's GPT-4 (``llm_entries``, with
``LLM_SCHEMA``); ``llm_propose`` types their keys from the text and checks every
translation with the same rules as the offline ones.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

from .. import terms
from ..pair import ModelPair
from .dictionary import AnchorDict, AnchorError, Entry, apply_merge_rules
from .proposals import target_terms, typed_rows, validate_translations
from .translation_rules import REJECTED_COLUMNS, is_function_word


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


def llm_entries(client, passages: Sequence[str]) -> tuple[AnchorDict, list[dict]]:
    """Ask an OpenAI-compatible model (``llm_client.LLMClient``) for entries, passage
    by passage, like the paper's GPT-4 step: (the entries, provenance ``llm``; what
    was turned down: keys that do not occur verbatim in their passage, function
    words, translations equal to their key). The translations are not checked
    yet: ``llm_propose`` types the keys and validates them."""
    out, rejected = AnchorDict(), []
    for passage in passages:
        answer = client.chat_json([{"role": "system", "content": LLM_INSTRUCTIONS},
                                   {"role": "user", "content": passage}], LLM_SCHEMA)
        for item in answer["entries"]:
            key = item["key"].strip()
            translations = [t.strip() for t in item["translations"]]
            if not key or terms.count(key, passage) == 0:
                rejected.append({"key": key, "translation": " | ".join(translations), "source": "llm",
                                 "reason": "the key does not occur in its passage"})
                continue
            if is_function_word(key):
                rejected.append({"key": key, "translation": " | ".join(translations), "source": "llm",
                                 "reason": "the key is a function word"})
                continue
            try:
                out.add(Entry(key, translations, "llm"))
            except AnchorError as err:   # e.g. a translation equal to its key: drop it, keep the rest
                keep = [t for t in translations if t and t.lower() != key.lower()]
                rejected.append({"key": key, "translation": " | ".join(t for t in translations if t not in keep),
                                 "source": "llm", "reason": str(err)})
                if keep:
                    out.add(Entry(key, keep, "llm"))
    return out, rejected


def llm_propose(client, passages: Sequence[str], text: str | None = None, avoid: Iterable[str] = (),
                pair: ModelPair | None = None, tok=None) -> AnchorDict:
    """Ask an OpenAI-compatible model (``llm_client.LLMClient``) for entries, passage by
    passage, like the paper's GPT-4 step (``llm_entries``). Keys must occur
    verbatim in their passage; each key is typed from ``text`` (default: the passages)
    and every translation then passes the same rules as the offline ones
    (``proposals.validate_translations``, against ``text`` and ``avoid``). What was rejected
    is in ``rejections(result)``."""
    out, rejected = llm_entries(client, passages)
    text = text if text is not None else "\n\n".join(passages)
    if len(out):
        types = {k: row["type"] for k, row in typed_rows(out.keys(), text).items()}
        for key in out.keys():
            out[key].note = types[key]
        targets = target_terms(text, extra=[*out.keys(), *avoid])
        out, bad = validate_translations(out, text, targets=targets, types=types, pair=pair, tok=tok,
                                         source="llm")
        rejected += bad.to_dict("records")
    out = apply_merge_rules(out)
    out.rejected = pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
    return out
