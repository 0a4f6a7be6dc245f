"""The memory plan: sane numbers against known cases, the right monotonicity, and a
clear error before a model that will not fit is loaded."""
import json

import pytest

from nbsupport import config, memory, training

LLAMA7 = memory.KNOWN_SHAPES["meta-llama/Llama-2-7b-chat-hf"]


def test_parameter_counts_match_the_published_models():
    assert LLAMA7.n_params == 6_738_415_616                       # Llama-2-7b
    assert memory.KNOWN_SHAPES["HuggingFaceTB/SmolLM2-1.7B-Instruct"].n_params == 1_711_376_384
    assert memory.KNOWN_SHAPES["embedded"].n_params == 134_515_008  # SmolLM2-135M


def test_full_finetune_with_adam_needs_16_bytes_per_parameter_unsharded():
    p = memory.plan(LLAMA7, "full", seq_len=512, batch_size=1)
    assert (p.weights - LLAMA7.n_params * 2 + p.grads + p.optimizer) / LLAMA7.n_params == 16  # less autocast copies
    assert 110 * memory.GiB < p.total < 130 * memory.GiB          # ~7B x 16 B + autocast copies + activations


def test_the_plan_grows_with_batch_and_sequence_and_full_costs_more_than_lora():
    totals = [memory.plan(LLAMA7, "lora", seq_len=512, batch_size=b).total for b in (1, 2, 4, 8)]
    assert totals == sorted(totals) and len(set(totals)) == 4
    by_seq = [memory.plan(LLAMA7, "lora", seq_len=s, batch_size=2).total for s in (128, 512, 2048)]
    assert by_seq == sorted(by_seq) and len(set(by_seq)) == 3
    assert memory.plan(LLAMA7, "full").total > 3 * memory.plan(LLAMA7, "lora").total
    off = memory.plan(LLAMA7, "lora", batch_size=8, checkpointing=False)
    on = memory.plan(LLAMA7, "lora", batch_size=8, checkpointing=True)
    assert off.activations > 10 * on.activations


def test_fsdp_divides_the_full_states_by_the_process_count():
    one = memory.plan(LLAMA7, "full")
    for n in (2, 4, 8):
        p = memory.plan(LLAMA7, "full", processes=n, fsdp=True)
        assert p.optimizer == one.optimizer // n and p.grads == one.grads // n
        assert p.activations == one.activations                    # data parallel: activations are per GPU
    ddp = memory.plan(LLAMA7, "lora", processes=4, fsdp=True)
    assert not ddp.fsdp and ddp.weights == memory.plan(LLAMA7, "lora").weights  # LoRA is not sharded


def test_largest_batch_fits_and_one_more_does_not():
    shape = memory.KNOWN_SHAPES["HuggingFaceTB/SmolLM2-1.7B-Instruct"]
    t4 = 15 * memory.GiB
    b = memory.largest_batch(shape, t4, method="lora", seq_len=512)
    assert b >= 8
    assert memory.plan(shape, "lora", 512, b).total <= t4 < memory.plan(shape, "lora", 512, b + 1).total
    assert memory.largest_batch(LLAMA7, t4, method="full", seq_len=512) == 0


def test_the_error_says_what_to_do():
    p = memory.plan(LLAMA7, "full", seq_len=512, batch_size=8)
    with pytest.raises(memory.DoesNotFitError, match="(?s)will not fit.*FSDP.*LoRA") as err:
        memory.check_fits(p, 80 * memory.GiB, LLAMA7)
    assert "total per GPU" in str(err.value)
    memory.check_fits(memory.plan(LLAMA7, "full", 512, 8, processes=8, fsdp=True), 80 * memory.GiB)


def test_shape_from_a_local_directory(tiny_model_dir):
    shape = memory.model_shape(tiny_model_dir)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert shape.hidden_size == cfg["hidden_size"] and shape.num_layers == cfg["num_hidden_layers"]
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    assert memory.model_shape("no/such-model-anywhere", network=False) is None


def test_split_global_batch_keeps_the_global_batch():
    assert memory.split_global_batch(128, 4, fits=8) == (8, 4)      # the paper's 8 x 16 on 4 GPUs
    assert memory.split_global_batch(128, 8, fits=3) == (2, 8)
    assert memory.split_global_batch(4, 2, fits=64) == (2, 1)
    with pytest.raises(memory.DoesNotFitError, match="divisible by 3"):
        memory.split_global_batch(4, 3, fits=4)


def test_the_gpu_profiles_check_memory_and_the_cpu_profiles_do_not():
    assert config.PROFILES["gpu"]["memory_check"] and config.PROFILES["paper"]["memory_check"]
    assert not config.PROFILES["cpu"]["memory_check"] and not config.PROFILES["smoke"]["memory_check"]
    # the paper's full finetune on one 80 GB GPU: refused from the model's name, before loading it
    cfg = config.resolve("paper")
    shape = memory.model_shape(cfg.model, network=False)
    settings = training.settings_from(cfg, "finetune", processes=1)
    assert settings.memory_check and settings.gradient_checkpointing
    with pytest.raises(memory.DoesNotFitError, match="FSDP"):
        training.fit_to_memory(settings, shape, cfg.block_size, gpu_bytes=80 * memory.GiB, processes=1, quiet=True)
    # on 8 GPUs with FSDP it fits, with the paper's global batch of 8 x 16 kept
    on8 = training.settings_from(cfg, "finetune", processes=8)
    s = training.fit_to_memory(on8, shape, cfg.block_size, gpu_bytes=80 * memory.GiB, processes=8, fsdp=True,
                               quiet=True)
    assert s.batch_size * s.grad_accum * 8 == 8 * 16
    # a small GPU gets a smaller batch and more accumulation, same global batch
    gpu = config.resolve("gpu")
    small = training.settings_from(gpu, "finetune", processes=1)
    s = training.fit_to_memory(small, memory.model_shape(gpu.model, network=False), gpu.block_size,
                               gpu_bytes=6 * memory.GiB, processes=1, quiet=True)
    assert s.batch_size < gpu.finetune_batch_size and s.batch_size * s.grad_accum == gpu.finetune_batch_size
    # the cpu profile is left exactly as it was, whatever the GPU
    cpu = training.settings_from(config.resolve("cpu"), "finetune", processes=1)
    assert training.fit_to_memory(cpu, shape, 256, gpu_bytes=1, processes=1) == cpu


def test_the_global_batch_is_split_over_processes():
    cfg = config.resolve("paper")
    one, four = (training.settings_from(cfg, "reinforce", processes=n) for n in (1, 4))
    assert (one.batch_size, one.grad_accum) == (8, 16)
    assert (four.batch_size, four.grad_accum) == (8, 4)
    smoke = training.settings_from(config.resolve("smoke"), "finetune", processes=2)
    assert (smoke.batch_size, smoke.grad_accum) == (1, 1)


def test_planned_settings_refuse_before_loading_when_nothing_fits(monkeypatch):
    """Notebooks 02 and 05 call planned_settings before they load the model."""
    cpu = config.resolve("cpu")
    assert training.planned_settings(cpu, "finetune") == training.settings_from(cpu, "finetune")  # no check on cpu
    paper = config.resolve("paper")
    monkeypatch.setattr(memory, "gpu_bytes", lambda fraction=0.95: 24 * memory.GiB)   # one 24 GB GPU
    monkeypatch.setattr(memory, "launch_environment", lambda: (1, False))
    with pytest.raises(memory.DoesNotFitError):
        training.planned_settings(paper, "reinforce")


def test_the_colab_profile_fits_a_free_t4_at_its_own_batch_sizes():
    """A T4 has 16 GB (15 GiB usable) and no bf16: the profile's 1.7B model in fp16
    trains at the batch the profile names, without lowering it, in both stages."""
    cfg = config.resolve("colab")
    shape = memory.model_shape(cfg.model, network=False)
    assert shape is not None and cfg.memory_check and cfg.gradient_checkpointing
    for stage in ("reinforce", "finetune"):
        settings = training.settings_from(cfg, stage, processes=1)
        fitted = training.fit_to_memory(settings, shape, cfg.block_size, gpu_bytes=15 * memory.GiB, processes=1,
                                        fsdp=False, quiet=True)
        assert fitted == settings, f"{stage}: the plan lowered the batch on a T4"
        need = memory.plan(shape, settings.method, cfg.block_size, settings.batch_size, checkpointing=True,
                           lora_r=settings.lora_r, half=True)
        assert need.total < 15 * memory.GiB
