"""How fast this machine is right now, to read a run's times against.

A shared or virtual machine does not always run at the same speed: on the course's
2-core development machine one training step took 1.16 s at one hour and 2.2 s
two hours later, with nothing else running. Run this before and after a timed run
(``python -m nbsupport run ...``) and report both with the run's times.

It times forward + backward passes of the embedded model on one batch of 4 x 128
tokens under bf16 autocast (the relearning attacker's step, without the optimizer),
after one warm-up pass, and prints the median and the spread.

    python benchmarks/machine_speed.py --steps 5
"""
from __future__ import annotations

import argparse
import time

import torch
from common import summary

from nbsupport import models
from nbsupport.precision import cpu_has_native_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed passes after one warm-up")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    model, _ = models.load_model("embedded", device="cpu")
    model.requires_grad_(True).train()
    ids = torch.randint(0, model.config.vocab_size, (4, 128), generator=torch.Generator().manual_seed(0))
    seconds = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_native_bf16()):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step:
            seconds.append(time.perf_counter() - start)
    print(f"forward + backward, 4 x 128 tokens, bf16 autocast {cpu_has_native_bf16()}, "
          f"{torch.get_num_threads()} threads: seconds a step {summary(seconds, 3)}")


if __name__ == "__main__":
    main()
