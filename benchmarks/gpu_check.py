"""The GPU check: does the course's GPU path work, and how fast is it?

Run it on a machine with a CUDA GPU (sized for < 8 minutes on one modern GPU):

    python benchmarks/gpu_check.py --out runs/gpu-check

1. the smoke series (all notebooks, papermill) on the embedded model with CUDA,
   in bf16 on compute capability >= 8.0 (fp16 below);
2. label-generation and training throughput in tokens per second, on the smoke
   run's corpus and reinforced model (bf16 autocast, fp32 master weights);
3. with 2 or more GPUs: the labels and finetune stages on 2 processes
   (``torchrun``, DDP), checking the labels equal the 1-process labels and
   timing the finetune.

Without CUDA it refuses at once (exit code 2): it measures nothing on a CPU.
The results are printed and written to OUT/gpu_check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

NO_GPU = ("gpu_check needs a CUDA GPU and found none (torch.cuda.is_available() is False): "
          "run it where a GPU is lent, e.g. Colab with a GPU runtime. Nothing was measured.")


def smoke_series(run_dir: Path, limit_s: int) -> float:
    """The notebook series on the smoke profile; seconds taken."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nbsupport", "run", "--profile", "smoke", "--run-dir", str(run_dir),
                    "--no-progress"], check=True, timeout=limit_s)
    return time.perf_counter() - start


def labels_tokens_per_second(run_dir: Path, repeats: int = 2) -> dict:
    """Label generation (the smoke run's alphas, top-k and dictionary) on the GPU."""
    from nbsupport import config, generic_labels, models, reinforce, runs
    from nbsupport.anchors import dictionary
    run = runs.Run(run_dir)
    cfg = runs.inherited_config(run_dir, "smoke", "labels")
    pair, tok = reinforce.load_reinforced(run, cfg.model, cfg.reinforce_method, device=models.pick_device())
    blocks = run.load_tensors("corpus/blocks.safetensors")["input_ids"]
    anchors = dictionary.AnchorDict.load(run.require("anchors/dictionary.json"))
    times = []
    for r in range(repeats):
        out = f"gpu-check/labels-{r}"
        shutil.rmtree(run.path(out), ignore_errors=True)
        config.set_seed(0)
        torch.cuda.synchronize()
        start = time.perf_counter()
        generic_labels.generate(pair, tok, blocks, run, anchors, [cfg.alpha, cfg.alpha / 2, 2 * cfg.alpha, 0.0],
                                top_k=cfg.soft_top_k, batch_size=8, seed=cfg.seed, out=out, progress=False)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"tokens": blocks.numel(), "tokens_per_s": blocks.numel() / min(times),
            "dtype": str(next(pair.model.parameters()).dtype)}


def training_tokens_per_second(run_dir: Path, method: str, steps: int = 20, batch: int = 8) -> dict:
    """Optimizer steps on the smoke corpus (LoRA or full) with the Trainer, on the GPU."""
    from nbsupport import models, runs, training
    run = runs.Run(run_dir)
    blocks = run.load_tensors("corpus/blocks.safetensors")["input_ids"]
    blocks = blocks.repeat(-(-steps * batch // len(blocks)), 1)[:steps * batch]
    model, _ = models.load_model("embedded", device=models.pick_device())
    settings = training.TrainSettings(method=method, max_steps=steps, batch_size=batch, save_steps=10 ** 6,
                                      learning_rate=1e-6 if method == "full" else 3e-4, logging_steps=5)
    out = f"gpu-check/train-{method}"
    shutil.rmtree(run.path(out), ignore_errors=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    trained, losses = training.train_and_save(model, training.BlockDataset(blocks), run, out, settings, resume=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    master = {str(p.dtype) for p in trained.parameters() if p.requires_grad}
    return {"method": method, "tokens": blocks.numel(), "seconds": seconds,
            "tokens_per_s": blocks.numel() / seconds, "trainable_dtypes": sorted(master),
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "final_loss": losses[-1]["loss"]}


def two_process_path(run_dir: Path) -> dict:
    """The labels and finetune stages on 2 GPUs (torchrun), on a copy of the smoke run."""
    from nbsupport import generic_labels, launch, runs
    two = run_dir.parent / (run_dir.name + "-2gpu")
    shutil.rmtree(two, ignore_errors=True)
    shutil.copytree(run_dir, two, ignore=shutil.ignore_patterns("labels*", "finetune", "evaluate", "methods",
                                                                "gpu-check", "notebooks"))
    result = {}
    for stage in ("labels", "finetune"):
        start = time.perf_counter()
        launch.launch_stage(stage, "smoke", two, processes=2)
        result[f"{stage}_seconds"] = time.perf_counter() - start
    one, both = generic_labels.load(runs.Run(run_dir)), generic_labels.load(runs.Run(two))
    one, both = one.to_tensors(), both.to_tensors()
    result["labels_identical_to_1_process"] = one.keys() == both.keys() and all(torch.equal(one[k], both[k]) for k in one)
    result["finetune_final_loss"] = runs.Run(two).read_json("finetune/paper/losses.json")[-1]["loss"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu-check", help="run directory of the check")
    parser.add_argument("--series-limit", type=int, default=300, help="seconds allowed for the smoke series")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    from nbsupport import models
    out = Path(args.out).resolve()
    device = models.pick_device()
    report = {"gpu": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability(device)),
              "gpus": torch.cuda.device_count(), "dtype": str(models.pick_dtype(device)), "torch": torch.__version__}
    print(json.dumps(report), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    report["smoke_series_seconds"] = smoke_series(out, args.series_limit)
    report["labels"] = labels_tokens_per_second(out)
    report["train_lora"] = training_tokens_per_second(out, "lora")
    report["train_full"] = training_tokens_per_second(out, "full")
    if torch.cuda.device_count() >= 2:
        report["two_gpus"] = two_process_path(out)
    else:
        report["two_gpus"] = "skipped: one GPU"
    text = json.dumps(report, indent=2)
    print(text)
    (out / "gpu_check.json").write_text(text + "\n")
    failed = report["train_full"]["trainable_dtypes"] != ["torch.float32"] or (
        isinstance(report["two_gpus"], dict) and not report["two_gpus"]["labels_identical_to_1_process"])
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
