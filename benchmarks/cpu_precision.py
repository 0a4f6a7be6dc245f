"""Training on the CPU in fp32 against bf16 autocast (``TrainSettings.cpu_bf16``).

Both sides run nbsupport's own training skeleton (``training.train``, the
transformers Trainer) on the same model, blocks, batch and steps: a fresh LoRA
adapter (the course's reinforcement, finetuning and methods) and a full finetune
(the relearning attack of notebook 07). Each repeat times fp32 and bf16 one after
the other, alternating the order; the first step of each side is a warm-up
(oneDNN builds its bf16 kernels then) and is not counted. Prints tokens/s per
side and the ratio bf16 / fp32, median and spread. Measures are not compared:
every measure of the course runs in fp32 whatever this setting.

    python benchmarks/cpu_precision.py --steps 6 --repeats 3
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import summary
from transformers import TrainerCallback

from nbsupport import corpus, models
from nbsupport.precision import cpu_has_native_bf16
from nbsupport.training import BlockDataset, TrainSettings, attach_lora, train


class _Clock(TrainerCallback):
    """Seconds of every optimizer step after the first (the warm-up)."""

    def __init__(self):
        self.times, self.last = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.last)


def tokens_per_second(method: str, bf16: bool, blocks: torch.Tensor, batch_size: int, steps: int) -> float:
    model, _ = models.load_model("embedded", device="cpu")
    settings = TrainSettings(method=method, learning_rate=1e-4 if method == "lora" else 3e-5,
                             batch_size=batch_size, max_steps=steps + 1, save_steps=10**9, cpu_bf16=bf16)
    if method == "lora":
        model = attach_lora(model, settings)
    else:
        model.requires_grad_(True)
    clock = _Clock()
    with tempfile.TemporaryDirectory() as scratch:
        train(model, BlockDataset(blocks), scratch, settings, resume=False, callbacks=[clock], progress=False)
    timed = clock.times[1:]
    return batch_size * blocks.shape[1] * len(timed) / sum(timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per side")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}, native bf16: {cpu_has_native_bf16()}")
    _, tok = models.load_model("embedded", device="cpu")
    text = corpus.builtin_corpus(tok, max_tokens=8192)
    for method, batch_size, block in (("lora", 4, 256), ("full", 4, 128)):
        blocks = corpus.make_blocks(text, tok, block)[: batch_size * (args.steps + 1)]
        rates = {False: [], True: []}
        for r in range(args.repeats):
            for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
                rates[bf16].append(tokens_per_second(method, bf16, blocks, batch_size, args.steps))
        ratios = [b / f for f, b in zip(rates[False], rates[True])]
        print(f"{method} ({batch_size} x {block} tokens): fp32 {summary(rates[False], 0)} tok/s; "
              f"bf16 {summary(rates[True], 0)} tok/s; ratio {summary(ratios, 2)}")


if __name__ == "__main__":
    main()
