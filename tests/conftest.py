"""Shared fixtures: a tiny byte-level BPE tokenizer and a tiny random Llama.

Both are built locally in well under a second, so unit tests never touch the
network or the embedded model. Tests marked ``slow`` use the real model.
"""
from __future__ import annotations

import pytest
import torch

# the fake OpenAI-compatible server's fixtures (server, _no_proxies), for every test module
pytest_plugins = ["fake_llm"]

TINY_TEXT = [
    "Harry Potter studies magic at a school in the mountains.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Ron and Hermione are friends. The owl flew over the castle at night.",
    "A cat sat on the mat and the dog slept by the fire.\nNew lines matter too.",
] * 20


@pytest.fixture(autouse=True)
def _fp32_training_in_process(monkeypatch):
    """Unit tests train tiny models in fp32 wherever they run: their margins are
    about the algorithms, not bf16 rounding (a 32-wide model feels it far more than
    a real one). Tests of the bf16 path ask for it with ``cpu_bf16=True``; the
    notebook and multi-process tests run in their own processes with the default."""
    from nbsupport import precision
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


def _tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TINY_TEXT, vocab_size=400, min_frequency=1,
                            special_tokens=["<pad>", "<eos>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, pad_token="<pad>",
                                  eos_token="<eos>")
    return tok


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return _tiny_tokenizer()


def make_tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
                      bos_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return make_tiny_model(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tiny_tokenizer):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct (converted once, then cached)."""
    from nbsupport import models
    return models.load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The real SmolLM2 tokenizer from the converted cache (no model weights loaded)."""
    from transformers import AutoTokenizer
    from nbsupport import models
    return AutoTokenizer.from_pretrained(str(models.prepare_embedded()))


def make_tiny_pair(vocab_size: int, seed: int = 0, shared: bool = True):
    """A tiny B/R ``ModelPair``: B a random tiny Llama, R the same weights plus a LoRA
    adapter with random (non-zero) A and B matrices, so R really differs from B.
    ``shared=False`` gives two separate models (R merged into a full copy)."""
    from peft import LoraConfig, get_peft_model

    from nbsupport.pair import ModelPair

    base = make_tiny_model(vocab_size, seed)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           task_type="CAUSAL_LM", init_lora_weights=False))
    peft.eval()
    if shared:
        return ModelPair(peft)
    reinforced = peft.merge_and_unload().eval()
    return ModelPair(reinforced, base=make_tiny_model(vocab_size, seed))


@pytest.fixture(scope="session")
def tiny_pair(tiny_tokenizer):
    """B and R over shared weights (R = B + a random LoRA adapter)."""
    return make_tiny_pair(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def smoke_series(tmp_path_factory):
    """The whole series run once in batch on the smoke profile (papermill): the
    notebooks' end-to-end test reads it, and the browser test opens its notebooks
    on it. Returns ``(run directory, the runner's results)``."""
    from pathlib import Path

    import os

    from nbsupport import runner
    reuse = os.environ.get("NBSUPPORT_TEST_SMOKE_RUN")   # a finished smoke run, to work on the browser test alone
    if reuse:
        return Path(reuse), None
    run_dir = tmp_path_factory.mktemp("smoke-series") / "run"
    results = runner.run_series("smoke", run_dir, Path(__file__).resolve().parents[1] / "notebooks", progress=False)
    return run_dir, results
