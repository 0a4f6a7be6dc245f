"""Anchored terms (notebook 03; docs/ALGORITHM.md section 3): the dictionary from the
target's idiosyncratic terms to generic ones, and how it is built from a text.

One room per purpose, in the order data flows: ``vocabulary`` and ``cues`` (the
words), ``dictionary`` (entries, files, rules, the translator), ``candidates`` ->
``contexts`` -> ``entity_types`` -> ``ranking`` (finding, typing and ranking a
text's terms, with ``boost``: what the models say), ``quality`` (against a
reference, for the reviewer), ``name_pools`` -> ``translation_rules`` ->
``pool_translations`` -> ``proposals`` and ``llm_proposals`` (translations, offline
or from an LLM), ``build`` (the run's three sources) and ``comparison`` (what two
dictionaries anchor).
"""
