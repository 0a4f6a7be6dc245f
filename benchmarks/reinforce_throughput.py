"""Reinforcement throughput: nbsupport's training skeleton (the transformers Trainer)
against a plain forward+backward loop doing the same work.

Both sides train a fresh LoRA adapter on the same model, blocks and batch size for
the same number of optimizer steps, with the same optimizer (AdamW), linear
learning-rate decay and gradient clipping at 1.0 (the Trainer's defaults), and an
attention mask. Each side is warmed up once in its own configuration (adapter
attached, optimizer stepped) before timing; the order alternates between repeats.
Prints the median and the spread (min-max) of tokens/s per side and of the ratio.
Target: nbsupport >= 0.9 of the plain loop.

    python benchmarks/reinforce_throughput.py --steps 8 --batch-size 4 --block-size 256 --repeats 3
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import summary

from nbsupport import config, corpus, models
from nbsupport.training import BlockDataset, TrainSettings, attach_lora, train


def plain_loop(model, blocks, settings, steps):
    model = attach_lora(model, settings)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    mask = torch.ones_like(blocks[: settings.batch_size])
    start = time.perf_counter()
    for step in range(steps):
        lo = (step * settings.batch_size) % len(blocks)
        batch = blocks[lo:lo + settings.batch_size]
        loss = model(input_ids=batch, attention_mask=mask[: len(batch)], labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    seconds = time.perf_counter() - start
    model.unload()  # remove the adapter: the next run starts from the same base
    return seconds


def trainer_loop(model, blocks, settings, steps):
    from dataclasses import replace
    model = attach_lora(model, settings)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(model, BlockDataset(blocks), tmp, replace(settings, max_steps=steps), resume=False, progress=False)
        seconds = time.perf_counter() - start
    model.unload()
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    config.set_seed(0)
    model, tok = models.load_model(args.model)
    text = corpus.builtin_corpus(tok, max_tokens=args.steps * args.batch_size * args.block_size + 2000)
    blocks = corpus.make_blocks(text, tok, args.block_size)[: args.steps * args.batch_size]
    settings = TrainSettings(batch_size=args.batch_size, max_steps=args.steps, save_steps=10**6,
                             logging_steps=10**6)
    tokens = args.steps * args.batch_size * args.block_size
    sides = {"plain": plain_loop, "nbsupport": trainer_loop}
    for fn in sides.values():  # warm-up in each side's own configuration, untimed
        fn(model, blocks, settings, 1)
    speed = {name: [] for name in sides}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in order:
            speed[name].append(tokens / sides[name](model, blocks, settings, args.steps))
    ratios = [n / p for n, p in zip(speed["nbsupport"], speed["plain"])]
    print(f"model {args.model}, {args.steps} steps x batch {args.batch_size} x {args.block_size} tokens "
          f"= {tokens} tokens per run, {args.repeats} repeats (order alternated), torch threads "
          f"{torch.get_num_threads()}")
    print(f"plain loop  tokens/s : {summary(speed['plain'])}")
    print(f"nbsupport   tokens/s : {summary(speed['nbsupport'])}")
    print(f"ratio nbsupport/plain: {summary(ratios, 3)}  target >= 0.9")


if __name__ == "__main__":
    main()
