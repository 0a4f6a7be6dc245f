"""The run's dictionary from its three sources (notebook 03): the curated
dictionary it starts from, the entries extracted from the target text and,
optionally, an LLM's proposals (``dictionary_sources``). Notebook 03 merges
them (``AnchorDict.merged``: the paper's merge rules) and has the result reviewed.
"""
from __future__ import annotations

import pandas as pd

from .. import llm_client
from ..pair import ModelPair
from .dictionary import AnchorDict, starting_dictionary
from .llm_proposals import llm_propose
from .proposals import propose_translations
from .ranking import new_terms


def dictionary_sources(cfg, text: str, ranked: pd.DataFrame, pair: ModelPair | None = None,
                       tok=None) -> tuple[AnchorDict, AnchorDict, AnchorDict]:
    """(curated, extracted, LLM) dictionaries for ``text``, as the run's ``cfg`` asks.

    curated: the one ``cfg.anchor_dictionary`` names (``starting_dictionary``, for
    ``cfg.target_text``); extracted: the ``cfg.n_extracted`` best-ranked candidates of
    ``ranked`` (``ranking.extract_candidates``) that are not curated keys, with
    translations proposed offline (``proposals.propose_translations``, seeded with
    ``cfg.seed``); LLM: with ``cfg.use_llm`` and a configured LLM
    (``llm_client.is_configured``), the entries it proposes for ``cfg.llm_passages``
    passages of the text (``llm_proposals.llm_propose``), else empty. ``pair`` and
    ``tok``: B and R and their tokenizer, for the reinforcement boost and B's own
    proposals (None: offline only)."""
    curated = starting_dictionary(cfg.anchor_dictionary, cfg.target_text)
    new = new_terms(ranked, curated, cfg.n_extracted)
    extracted = propose_translations(new, text, pair=pair, tok=tok, seed=cfg.seed, avoid=curated.keys(),
                                     ranked=ranked)
    proposed = AnchorDict()
    if cfg.use_llm and llm_client.is_configured():
        passages = [text[i:i + 2000] for i in range(0, len(text), len(text) // cfg.llm_passages + 1)]
        proposed = llm_propose(llm_client.LLMClient.from_env(), passages[: cfg.llm_passages], text=text,
                               avoid=curated.keys(), pair=pair, tok=tok)
    elif cfg.use_llm:
        print("USE_LLM is on but NBSUPPORT_LLM_BASE_URL / NBSUPPORT_LLM_MODEL are not set: skipped")
    return curated, extracted, proposed
