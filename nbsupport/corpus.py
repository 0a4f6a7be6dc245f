"""The target text T: the built-in Harry Potter corpus or the user's own text,
normalised and cut into fixed-length token blocks (paper: 512 tokens).

The built-in corpus is written for this course (never book text): free prose in
``data/corpus/prose`` (character sketches, places, a summary of each book in our
own words, fan-forum and blog pieces) plus sentences rendered from a knowledge
base of the world (``hp_world.json``) with many paraphrase templates
(``templates.json``). Rendering is deterministic given a seed.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import json
import random
import re
import unicodedata
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

import torch

from . import package_data
from .models import cache_root
from .runs import atomic_path

BUILTIN = "builtin"


class CorpusError(ValueError):
    """The target text cannot be used; the message says why and what to do."""


# ----------------------------------------------------------------- built-in corpus
def load_world() -> dict:
    """The knowledge base: ``{"entities": [...], "relations": [...]}``."""
    return json.loads(package_data("corpus", "hp_world.json").read_text("utf-8"))


def _sentence(text: str) -> str:
    # Names like "the Burrow" start templates; quiz answers follow "A: ".
    text = text[:1].upper() + text[1:]
    return re.sub(r"(A: )(\w)", lambda m: m.group(1) + m.group(2).upper(), text)


def prose_documents() -> list[str]:
    """The hand-written prose, one document per ``# heading`` section."""
    docs = []
    for path in sorted(package_data("corpus", "prose").glob("*.md")):
        for section in re.split(r"(?m)^# ", path.read_text("utf-8")):
            if section.strip():
                title, _, body = section.partition("\n")
                docs.append(f"{title.strip()}\n\n{body.strip()}")
    return docs


def rendered_documents(seed: int = 0, passes: int = 2) -> list[str]:
    """One paragraph per entity and pass, each from randomly chosen paraphrases:
    an entity sentence, some attribute sentences and the entity's relations."""
    world = load_world()
    templates = json.loads(package_data("corpus", "templates.json").read_text("utf-8"))
    names = {e["id"]: e for e in world["entities"]}
    outgoing: dict[str, list[dict]] = {}
    for rel in world["relations"]:
        outgoing.setdefault(rel["subject"], []).append(rel)
    rng = random.Random(seed)
    docs = []
    for _ in range(passes):
        entities = list(world["entities"])
        rng.shuffle(entities)
        for ent in entities:
            def call(e):  # sometimes a known alias instead of the full name
                aliases = e.get("aliases") or []
                return rng.choice(aliases) if aliases and rng.random() < 0.3 else e["name"]

            parts = [rng.choice(templates["entities"][ent["type"]]).format(
                name=ent["name"], description=ent["description"], type=ent["type"])]
            attrs = [k for k in ent.get("attributes", {}) if k in templates["attributes"]]
            for key in rng.sample(attrs, min(2, len(attrs))):
                parts.append(rng.choice(templates["attributes"][key]).format(
                    name=call(ent), **{f"attr_{key}": ent["attributes"][key]}))
            rels = outgoing.get(ent["id"], [])
            for rel in rng.sample(rels, min(4, len(rels))):
                parts.append(rng.choice(templates["relations"][rel["relation"]]).format(
                    subject=call(ent), object=call(names[rel["object"]])))
            docs.append(" ".join(_sentence(p) for p in parts))
    return docs


def builtin_documents(seed: int = 0, passes: int = 2) -> list[str]:
    """Prose and rendered paragraphs shuffled together in a seeded, deterministic order
    (a token budget taken from the front mixes both kinds)."""
    docs = prose_documents() + rendered_documents(seed, passes)
    random.Random(seed).shuffle(docs)
    return docs


def builtin_corpus(tok=None, seed: int = 0, max_tokens: int | None = None, passes: int = 2) -> str:
    """The built-in target text; with ``max_tokens`` (needs ``tok``), the first
    documents of the seeded order up to that many tokens (the cpu-profile subset)."""
    docs = builtin_documents(seed, passes)
    if max_tokens is not None:
        if tok is None:
            raise ValueError("max_tokens needs the tokenizer that counts the tokens")
        kept, total = [], 0
        for doc in docs:
            kept.append(doc)
            total += len(tok(doc + "\n\n")["input_ids"])
            if total >= max_tokens:
                break
        docs = kept
    return "\n\n".join(docs)


# ----------------------------------------------------------------- user text
def normalize(text: str) -> str:
    """Unicode NFC, a leading BOM dropped, \\r\\n -> \\n, runs of spaces and tabs
    -> one space, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff")).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _decode(data: bytes, where: str) -> str:
    if b"\x00" in data[:8192]:
        raise CorpusError(f"{where} looks binary (it has NUL bytes): give plain UTF-8 text (.txt)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{where} is not UTF-8 (bad byte at offset {err.start}); convert it, e.g. "
                          f"`iconv -f latin1 -t utf-8 in.txt > out.txt`") from None


def _files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"folder {path} holds no .txt files")
        return files
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise CorpusError(f"the pattern {source!r} matches no files")
        return files
    raise CorpusError(f"{source!r} is not a file, a folder or a glob pattern that exists")


def download(url: str, sha256: str, cache_dir: Path, allow_download: bool = False) -> Path:
    """Fetch ``url`` once into ``cache_dir`` and check its sha256 (required)."""
    if not sha256 or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise CorpusError(f"a URL needs its sha256 (64 hex digits) so the text is verifiable; got {sha256!r}")
    target = Path(cache_dir) / f"{sha256.lower()}.txt"
    if not target.exists():
        if not allow_download:
            raise CorpusError(f"{url} is not downloaded yet: pass allow_download=True "
                              "(TARGET_DOWNLOAD = True) when you are online")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                data = resp.read()
        except OSError as err:
            raise CorpusError(f"could not download {url}: {err}. Offline? Download it by hand and "
                              "pass the file path instead") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise CorpusError(f"checksum mismatch for {url}: expected {sha256.lower()}, got {digest}")
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    data = target.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256.lower():
        raise CorpusError(f"checksum mismatch for the cached copy {target}: delete it and download again")
    return target


def load_text(source: str, sha256: str | None = None, allow_download: bool = False,
              cache_dir: str | Path | None = None) -> str:
    """Read the user's target text: a file, a folder of .txt, a glob, or a URL.

    Files are joined with a blank line in sorted order and normalised.
    """
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise CorpusError("give the target text as a file, folder, glob pattern or URL")
    source = str(source)
    if re.match(r"https?://", source):
        files = [download(source, sha256 or "", Path(cache_dir or cache_root() / "texts"), allow_download)]
    else:
        files = _files(source)
    texts = []
    for f in files:
        data = f.read_bytes()
        if not data.strip():
            raise CorpusError(f"{f} is empty")
        texts.append(_decode(data, str(f)))
    text = normalize("\n\n".join(texts))
    if not text:
        raise CorpusError(f"{source} holds only whitespace")
    return text


def target_text(source: str, tok=None, seed: int = 0, max_tokens: int | None = None,
                sha256: str | None = None, allow_download: bool = False) -> str:
    """``"builtin"`` for the built-in corpus, else the user's text (see ``load_text``);
    with ``max_tokens``, only the first that many tokens of it."""
    if source == BUILTIN:
        return builtin_corpus(tok, seed=seed, max_tokens=max_tokens)
    text = load_text(source, sha256=sha256, allow_download=allow_download)
    if max_tokens is not None:
        if tok is None:
            raise ValueError("max_tokens needs the tokenizer that counts the tokens")
        offsets = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) > max_tokens:
            text = text[: offsets[max_tokens - 1][1]]
    return text


# ----------------------------------------------------------------- evaluation text
TEXT_KINDS = ("generic", "nearby", "independent")


def load_eval_texts(kind: str = "generic") -> list[str]:
    """The texts shipped in ``nbsupport/data/eval/<kind>/*.md``, in file-name order.

    * ``"generic"``: everyday writing with no Harry Potter in it (12 pieces, ~8.6K
      tokens): the *retain* text the KL term of finetuning is trained on;
    * ``"independent"``: 25 pieces of another source and other kinds of writing
      (news, encyclopedic entries, conversations, instructions, realistic fiction;
      ~26K tokens), never trained on: the *held-out* text every perplexity and KL
      of the course is measured on;
    * ``"nearby"``: other fantasy, to see collateral damage near the target.
    """
    if kind not in TEXT_KINDS:
        raise ValueError(f"unknown text kind {kind!r}: choose one of {', '.join(TEXT_KINDS)}")
    folder = package_data("eval", kind)
    texts = [p.read_text("utf-8") for p in sorted(folder.glob("*.md"))]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise FileNotFoundError(f"{folder} holds no non-empty .md files; reinstall nbsupport")
    return texts


def retain_texts() -> list[str]:
    """Generic text that training may use (the KL retain term): the ``generic`` pool."""
    return load_eval_texts("generic")


def heldout_texts(limit: int | None = None) -> list[str]:
    """Generic text that is only ever measured: the ``independent`` pool (its first
    ``limit`` pieces, which mix all five kinds of writing, for a lighter measure)."""
    texts = load_eval_texts("independent")
    return texts if limit is None else _interleaved(texts)[:limit]


def _interleaved(texts: list[str]) -> list[str]:
    # files come as 5 kinds x 5 pieces (01-05 news, 06-10 encyclopedic, ...): take one
    # of each kind in turn, so any prefix is a mix of kinds
    kinds = 5 if len(texts) % 5 == 0 else 1
    per = len(texts) // kinds
    return [texts[k * per + i] for i in range(per) for k in range(kinds)]


# ----------------------------------------------------------------- blocks
def make_blocks(text: str, tok, block_size: int = 512) -> torch.Tensor:
    """Tokenize ``text`` once and cut it into non-overlapping blocks.

    Returns a LongTensor of shape [n_blocks, block_size]; the last partial block
    is dropped, as in the paper.
    """
    if block_size < 2:
        raise CorpusError(f"block_size must be at least 2, got {block_size}")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = len(ids) // block_size
    if n == 0:
        raise CorpusError(f"the text has {len(ids)} tokens, shorter than one block of {block_size}: "
                          "give more text or a smaller block size")
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


def count_tokens(texts: Iterable[str], tok) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
