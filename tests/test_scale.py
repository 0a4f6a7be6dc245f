"""Paper scale on CPU: the Trainer path under DDP (2 processes, gloo), LoRA with
gradient checkpointing, reuse of a finished training, the stage launcher and
the shipped accelerate configs."""
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.checkpoint import checkpoint
from transformers import TrainerCallback

from nbsupport import finetune, launch, runs, training
from conftest import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
# DDP averages the two processes' gradients: the same sums in another order, so
# the weights agree to float32 rounding, far below what one step changes (~1e-3)
DDP_TOLERANCE = 1e-5

WORKER = """
import os, sys
import torch
from transformers import AutoModelForCausalLM
from nbsupport import runs, training
model_dir, run_dir, global_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(model_dir)
blocks = torch.randint(2, model.config.vocab_size, (16, 32), generator=torch.Generator().manual_seed(0))
# the global batch split over the processes, as settings_from does
settings = training.TrainSettings(method="full", max_steps=3, batch_size=global_batch // int(os.environ["WORLD_SIZE"]),
                                  learning_rate=1e-3, save_steps=100, seed=0, gradient_checkpointing=True,
                                  cpu_bf16=False)   # the same math as one process: compared to 1e-5
training.train_and_save(model, training.BlockDataset(blocks), runs.Run(run_dir), "ft", settings)
"""


def _blocks(vocab):
    return torch.randint(2, vocab, (16, 32), generator=torch.Generator().manual_seed(0))


def _clean_env():
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_FSDP")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1",
            "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture
def tiny_dir(tmp_path):
    path = tmp_path / "tiny"
    make_tiny_model(400).save_pretrained(path)
    return path


def test_ddp_on_two_processes_trains_the_model_of_one_process(tmp_path, tiny_dir):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tiny_dir), str(two), "4"]
    done = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # one process, the same global batch of 4, in this process
    model = make_tiny_model(400).train()
    settings = training.TrainSettings(method="full", max_steps=3, batch_size=4, learning_rate=1e-3,
                                      save_steps=100, seed=0, gradient_checkpointing=True, cpu_bf16=False)
    one = runs.Run(tmp_path / "one")
    training.train_and_save(model, training.BlockDataset(_blocks(400)), one, "ft", settings, callbacks=())
    a = load_file(str(one.path("ft/model/model.safetensors")))
    b = load_file(str(two / "ft/model/model.safetensors"))
    start = load_file(str(tiny_dir / "model.safetensors"))
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    apart = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 100 * DDP_TOLERANCE, "training should have moved the weights"
    assert apart < DDP_TOLERANCE, f"DDP on 2 processes differs from 1 process by {apart:g}"
    # the same losses, gathered over both processes
    l1, l2 = one.read_json("ft/losses.json"), runs.Run(two).read_json("ft/losses.json")
    assert [r["step"] for r in l1] == [r["step"] for r in l2] == [1, 2, 3]
    assert all(abs(x["loss"] - y["loss"]) < 1e-4 for x, y in zip(l1, l2))

    # the finished 2-process training is reused on 1 process (same global batch), not repeated
    class Seen(TrainerCallback):
        step = None

        def on_train_begin(self, args, state, control, **kw):
            Seen.step = state.global_step

    fresh = make_tiny_model(400)
    reused, losses = training.train_and_save(fresh, training.BlockDataset(_blocks(400)), runs.Run(two), "ft",
                                             settings, callbacks=[Seen()])
    assert Seen.step == 3 and losses == l2
    assert all(torch.equal(p, b[k]) for k, p in reused.state_dict().items() if k in b)
    # other settings (another global batch) are not mistaken for the finished run
    other = dataclasses.replace(settings, batch_size=2)
    assert training.finished_training(runs.Run(two), "ft", other) is None


def _lora_b_grads(model):
    return [p.grad for n, p in model.named_parameters() if "lora_B" in n]


@pytest.mark.parametrize("reentrant", [True, False])
def test_lora_with_checkpointing_gives_lora_b_gradients(reentrant):
    ids = torch.randint(2, 400, (2, 16), generator=torch.Generator().manual_seed(1))
    model = training.attach_lora(make_tiny_model(400), training.TrainSettings(lora_r=2)).train()
    training.enable_checkpointing(model, reentrant=reentrant)
    model(input_ids=ids, labels=ids).loss.backward()
    grads = _lora_b_grads(model)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_the_trap_is_real_without_input_grads():
    """Reentrant checkpointing of a frozen base without enable_input_require_grads:
    the adapters inside the checkpointed layers are cut off from the loss (what
    enable_checkpointing prevents)."""
    ids = torch.randint(2, 400, (2, 16), generator=torch.Generator().manual_seed(1))
    model = training.attach_lora(make_tiny_model(400), training.TrainSettings(lora_r=2)).train()
    model.get_base_model()._set_gradient_checkpointing(
        enable=True, gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=True))
    with pytest.warns(UserWarning):   # torch: "None of the inputs have requires_grad=True"
        loss = model(input_ids=ids, labels=ids).loss
    assert not loss.requires_grad     # no gradient can reach lora_B


def test_lora_training_with_checkpointing_moves_lora_b(tmp_path):
    settings = training.TrainSettings(method="lora", max_steps=2, batch_size=4, learning_rate=1e-2, lora_r=2,
                                      save_steps=100, gradient_checkpointing=True)
    model, _ = training.train_and_save(make_tiny_model(400), training.BlockDataset(_blocks(400)),
                                       runs.Run(tmp_path), "lora", settings)
    assert model.get_base_model().model.gradient_checkpointing or any(
        getattr(m, "gradient_checkpointing", False) for m in model.modules())
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)   # LoRA starts with lora_B = 0


def test_launch_commands():
    cmd = launch.launch_command("labels", "paper", "/runs/p", {"MODEL": "my/model", "ALPHA": 5.0}, processes=4)
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m"]
    assert cmd[7:] == ["nbsupport", "stage", "labels", "--profile", "paper", "--run-dir", "/runs/p",
                       "-p", "MODEL", '"my/model"', "-p", "ALPHA", "5.0"]
    one = launch.launch_command("finetune", "gpu", "r", processes=1)
    assert one[1:4] == ["-m", "nbsupport", "stage"]
    fsdp = launch.launch_command("finetune", "paper", "r", processes=8,
                                 accelerate_config=CONFIGS / "fsdp_8gpu_full.yaml")
    assert fsdp[1:6] == ["-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp_8gpu_full.yaml"),
                         "--num_processes"]
    with pytest.raises(FileNotFoundError, match="configs/accelerate"):
        launch.launch_command("finetune", "paper", "r", processes=8, accelerate_config="nope.yaml")
    with pytest.raises(ValueError, match="processes"):
        launch.launch_command("finetune", "paper", "r", processes=0)
    with pytest.raises(ValueError, match="unknown stage"):
        launch.run_stage("evaluate", "smoke", "r")
    assert launch.config_overrides({"MODEL": "m", "RESUME": True, "INTERACTIVE": False}) == {"model": "m"}


def test_accelerate_configs_are_valid_for_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    known = {a.dest for a in launch_command_parser()._actions}
    want = {"single_gpu.yaml": ("NO", 1), "ddp_4gpu.yaml": ("MULTI_GPU", 4), "fsdp_8gpu_full.yaml": ("FSDP", 8)}
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(want)
    for name, (kind, n) in want.items():
        cfg = load_config_from_file(str(CONFIGS / name))
        assert (str(cfg.distributed_type).split(".")[-1], cfg.num_processes) == (kind, n)
        raw = yaml.safe_load((CONFIGS / name).read_text())
        assert set(raw.get("fsdp_config", {})) <= known, set(raw.get("fsdp_config", {})) - known
    fsdp = yaml.safe_load((CONFIGS / "fsdp_8gpu_full.yaml").read_text())["fsdp_config"]
    import transformers.models.llama.modeling_llama as llama
    assert hasattr(llama, fsdp["fsdp_transformer_layer_cls_to_wrap"])   # the class FSDP wraps exists
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"           # save_pretrained gets whole weights
    assert fsdp["fsdp_sync_module_states"] or not fsdp["fsdp_cpu_ram_efficient_loading"]


def test_each_heavy_stage_has_one_implementation_that_notebooks_and_scripts_share():
    """Notebooks 02, 04 and 05 call the same package functions as the stage scripts
    (no second copy of a stage to drift), and the stage table names their notebooks."""
    def source(number):
        nb = nbformat.read(next((ROOT / "notebooks").glob(f"{number}_*.ipynb")), as_version=4)
        return "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "reinforce.target_blocks(run, cfg, tok)" in source("02") and "reinforce.reinforce(" in source("02")
    assert "generic_labels.run_stage(" in source("04") and "generic_labels.generate(" not in source("04")
    nb05 = source("05")
    assert "finetune.train_recipes(" in nb05 and "finetune.train_variants(" in nb05
    assert "finetune.finetune(" not in nb05 and "train_variant(" not in nb05.replace("train_variants(", "")
    assert launch.STAGE_NOTEBOOKS == {"reinforce": "02", "labels": "04", "finetune": "05"}
    import inspect
    for stage, call in (("reinforce", "reinforce.run_stage("), ("labels", "generic_labels.run_stage("),
                        ("finetune", "finetune.train_recipes(")):
        assert call in inspect.getsource(launch.STAGES[stage]), stage
    assert finetune.variant_folder("alpha=10, 1 epoch") == "finetune/variants/alpha-10-1-epoch"


def test_the_gpu_check_refuses_without_cuda():
    script = ROOT / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--out", "unused"], env={**_clean_env()},
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "needs a CUDA GPU" in done.stderr and not (ROOT / "unused").exists()
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)    # it imports without a GPU, and every step it runs exists
    for name in ("smoke_series", "labels_tokens_per_second", "training_tokens_per_second", "two_process_path"):
        assert callable(getattr(module, name))


@pytest.mark.slow
def test_stages_run_as_scripts_under_torchrun_and_the_notebook_path_reuses_them(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    """The runner's path: the reinforce stage, then the labels stage launched on 2
    processes (``python -m nbsupport stage`` under torchrun, so each reads RANK and
    WORLD_SIZE from its environment), equal to 1 process."""
    from nbsupport import generic_labels, reinforce
    from nbsupport.anchors import dictionary
    params = {"MODEL": str(tiny_model_dir), "CORPUS_TOKENS": 512, "LABEL_BATCH_SIZE": 2, "RESUME": True}
    one = tmp_path / "one"
    launch.run_stage("reinforce", "smoke", one, params)
    run = runs.Run(one)
    assert run.exists("reinforce/adapter") and run.exists("reinforce/trained.json")
    assert run.read_json("config/reinforce.json")["model"] == str(tiny_model_dir)
    dictionary.builtin_dictionary().save(run.path("anchors/dictionary.json"))
    run.write_json("config/anchors.json", run.read_json("config/reinforce.json"))
    two = tmp_path / "two"
    shutil.copytree(one, two)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    launch.launch_stage("labels", "smoke", two, params, processes=2)
    launch.run_stage("labels", "smoke", one, params)
    a, b = generic_labels.load(run).to_tensors(), generic_labels.load(runs.Run(two)).to_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs.Run(two).exists("labels-reinforcement-only/meta.json")   # the smoke profile's ablation too
    # notebook 02's call finds the reinforcement finished: it loads it instead of training again
    from nbsupport import config, models
    cfg = runs.inherited_config(one, "smoke", "reinforce", model=str(tiny_model_dir))
    model, tok = models.load_model(cfg.model, device="cpu")
    blocks = run.load_tensors("corpus/blocks.safetensors")["input_ids"]
    before = {p.name for p in run.path("reinforce/checkpoints").iterdir()}
    pair, losses = reinforce.reinforce(model, blocks, run, training.settings_from(cfg, "reinforce"), tok=tok)
    assert losses == run.read_json("reinforce/losses.json")
    assert {p.name for p in run.path("reinforce/checkpoints").iterdir()} == before



def test_a_failed_stage_says_how_to_rerun_it(monkeypatch):
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(launch.StageFailed, match="(?s)stage 'labels' failed on 2.*torch.distributed.run"):
        launch.launch_stage("labels", "smoke", "/nowhere", {}, processes=2)


def test_the_runner_launches_each_stage_before_its_notebook(tmp_path, monkeypatch):
    from nbsupport import runner
    for name in ("01_a", "02_b", "03_c", "04_d", "05_e"):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [nbformat.v4.new_markdown_cell("# t"),
                    nbformat.v4.new_code_cell('PROFILE = "cpu"\nRUN_DIR = "r"\nALPHA = None\nRESUME = True',
                                              metadata={"tags": ["parameters"]})]
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    order, progress_env = [], []
    monkeypatch.delenv("NBSUPPORT_PROGRESS", raising=False)

    def execute(nb, out, **kw):
        order.append(Path(nb).name[:2])
        progress_env.append(os.environ.get("NBSUPPORT_PROGRESS"))

    monkeypatch.setattr(runner.pm, "execute_notebook", execute)
    monkeypatch.setattr(runner, "launch_stage", lambda stage, profile, run_dir, params, n, cfg:
                        order.append((stage, profile, params, n, cfg)))
    runner.run_series("smoke", tmp_path / "run", tmp_path, parameters={"ALPHA": 2.0}, processes=2, progress=False)
    staged = {"ALPHA": 2.0}   # the notebook's parameters as given, less PROFILE and RUN_DIR
    assert order == ["01", ("reinforce", "smoke", staged, 2, None), "02", "03", ("labels", "smoke", staged, 2, None),
                     "04", ("finetune", "smoke", staged, 2, None), "05"]
    order.clear()
    runner.run_series("smoke", tmp_path / "run", tmp_path, progress=False)   # one process: notebooks only
    assert order == ["01", "02", "03", "04", "05"]
    # the kernels draw no progress bars (frozen at 0% in saved notebooks); the environment is restored after
    assert set(progress_env) == {"0"} and "NBSUPPORT_PROGRESS" not in os.environ
