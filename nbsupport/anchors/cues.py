"""The cue lexicon of entity typing (notebook 03), from ``data/anchors/cue_lexicon.json``:
the words around a term's occurrences that say what it is (``CUES``, by type and
position; ``SENTENCE_WORDS``, anywhere in the sentence), the nouns a text may
define a term by (``KIND_NOUNS``), titles that say a gender or a surname,
pronouns, articles and determiners, and the words around a sport's name.
``anchors.contexts`` reads them around each occurrence, ``anchors.entity_types``
weighs them.
"""
from __future__ import annotations

import json

from .. import package_data
from .vocabulary import HEADS, TYPES

_LEXICON = json.loads(package_data("anchors", "cue_lexicon.json").read_text("utf-8"))

MALE_TITLES = set(_LEXICON["titles"]["male"])
FEMALE_TITLES = set(_LEXICON["titles"]["female"])
SURNAME_TITLES = set(_LEXICON["titles"]["surname"])

# Cue words around an occurrence (lower case) and what they say about the term's type.
CUES = {t: {k: set(v) for k, v in c.items()} for t, c in _LEXICON["cues"].items()}
# Words anywhere in the sentence around an occurrence: weak evidence, summed.
SENTENCE_WORDS = {t: set(v) for t, v in _LEXICON["sentence_words"].items()}
ARTICLES = set(_LEXICON["articles"])
DETERMINERS = set(_LEXICON["determiners"])
# What a text says a term *is* ("Gringotts, the bank that...", "Horcrux: an object in
# which...", "Voldemort, a dark wizard who..."): the kind noun of the definition, by type.
# The head nouns of names, less the two that name both a place and a group or a person's
# kin ("a house", "a family"), plus the nouns for people and animals.
KIND_NOUNS = {t: set(HEADS[t]) - {"house", "family"} for t in TYPES if t in HEADS}
KIND_NOUNS["person"] = set(_LEXICON["person_nouns"])
KIND_NOUNS["creature"] = KIND_NOUNS.get("creature", set()) | CUES["creature"]["kind"]
CALLED = set(_LEXICON["called"])
ALL_HEADS = {w for heads in HEADS.values() for w in heads}
PRONOUNS = dict(_LEXICON["pronouns"])
# "play X", "the X match": the name of a sport
SPORT_BEFORE = set(_LEXICON["sport"]["before"])
SPORT_AFTER = set(_LEXICON["sport"]["after"])


