"""
Score a checkpoint on a multiple-choice task by its own loss, as the paper's downstream evaluation does.

    python eval.py --out_dir=out/NAME                          # HellaSwag, downloaded to data/hellaswag/ once
    python eval.py --out_dir=out/NAME --input=hellaswag_val.jsonl --limit=1000   # offline, the first 1000 items
    python eval.py --out_dir=out/NAME --task=mc --input=arc_easy.jsonl            # any task in the generic form
    torchrun --standalone --nproc_per_node=8 eval.py --out_dir=out/dense_1b_polynorm   # items split over 8 GPUs

The answer to each item is the choice with the lowest summed loss given the context (acc), or the lowest mean
loss per token (acc_norm); data/tasks.py says how. The results print as a table and are appended to
out_dir/eval.jsonl, one record per evaluation.
"""

import argparse
import json
import os
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from checkpoint import load_checkpoint
from common import device_kind, join_processes
from data.tasks import evaluate_task, load_task


def table(name, step, result):
    """The result as a small text table; ± is the half-width of a 95 % interval (1.96 standard errors, where
    lm-eval prints one standard error)."""
    rows = [('task', 'step', 'n', 'acc ± 95 % interval', 'acc_norm ± 95 % interval'),
            (name, str(step), f"{result['n']:,}", f"{result['acc']:.4f} ± {result['acc_ci95']:.4f}",
             f"{result['acc_norm']:.4f} ± {result['acc_norm_ci95']:.4f}")]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Score a checkpoint on a multiple-choice task by its own loss.")
    parser.add_argument('--out_dir', default='out', help="the training run's out_dir (default: out)")
    parser.add_argument('--task', default='hellaswag',
                        help="'hellaswag' (default), 'mc' (the generic format, from --input), or a generic .jsonl file")
    parser.add_argument('--input', help="the task's file: HellaSwag's published jsonl (then nothing is downloaded), "
                                        "or a generic .jsonl file for --task=mc")
    parser.add_argument('--limit', type=int, help="score only the first N items")
    parser.add_argument('--batch_size', type=int, default=16, help="items per forward pass (default: 16)")
    parser.add_argument('--device', default=device_kind())
    args = parser.parse_args(argv)
    for name in ('limit', 'batch_size'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.input is not None and not os.path.isfile(args.input):
        parser.error(f"--input={args.input}: no such file")
    rank, world_size, device = join_processes(args.device)
    try:
        evaluate(args, rank, world_size, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def evaluate(args, rank, world_size, device):
    try:
        ckpt = load_checkpoint(args.out_dir, device)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    model = ckpt['model']
    try:
        task = load_task(args.task, ckpt['meta'], model.config.block_size, args.input, args.limit)
    except (OSError, ValueError, RuntimeError) as e:
        raise SystemExit(str(e)) from None
    if rank == 0:
        print(f"{task['name']}: {len(task['items']):,} items from {task['path']}, {world_size} process(es) on "
              f"{device.type}, step {ckpt['step']} of {args.out_dir}")
    # bf16 on GPUs, as in training; the CPU runs float32. The losses are taken in float32 either way.
    bf16 = device.type == 'cuda' and torch.cuda.is_bf16_supported()
    start = time.time()
    with torch.autocast('cuda', dtype=torch.bfloat16) if bf16 else nullcontext():
        result = evaluate_task(model, task, args.batch_size, progress=True)
    if rank == 0:
        print(table(task['name'], ckpt['step'], result))
        record = {'task': task['name'], 'step': ckpt['step'], **result, 'file': task['path'],
                  'processes': world_size, 'seconds': round(time.time() - start, 1)}
        with open(os.path.join(args.out_dir, 'eval.jsonl'), 'a') as f:  # appended: earlier evaluations stay
            f.write(json.dumps(record) + '\n')


if __name__ == '__main__':
    main()
