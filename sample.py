"""
Generate text from a trained checkpoint.

    python sample.py                                         # from out/, after `python train.py`
    python sample.py --out_dir=out/dense_1b_polynorm --start="Once upon a time" --num_samples=3
    python sample.py --start=FILE:prompt.txt --temperature=0  # greedy, prompt read from a file

Reads out_dir/ckpt.pt, or the sharded out_dir/ckpt/ that an fsdp run writes (gathered whole here, in one
process), and decodes with the tokenizer of the dataset the model was trained on (kept in the checkpoint).
"""

import argparse
from contextlib import nullcontext

import torch

from checkpoint import load_checkpoint
from common import device_kind
from data.shards import get_tokenizer


def read_prompt(start):
    """--start's text: the string itself, or the contents of the file it names as FILE:path."""
    if start.startswith('FILE:'):
        with open(start[len('FILE:'):], encoding='utf-8') as f:
            return f.read()
    return start


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate text from a checkpoint trained by train.py.")
    parser.add_argument('--out_dir', default='out', help="the training run's out_dir (default: out)")
    parser.add_argument('--start', default='\n', help="the prompt, or FILE:path to read it from a file")
    parser.add_argument('--num_samples', type=int, default=3)
    parser.add_argument('--max_new_tokens', type=int, default=300)
    parser.add_argument('--temperature', type=float, default=0.8, help="0 = greedy; higher = more random")
    parser.add_argument('--top_k', type=int, default=200, help="sample from the k likeliest tokens only; 0 = all")
    parser.add_argument('--seed', type=int, default=1337)
    parser.add_argument('--device', default=device_kind())
    parser.add_argument('--no_cache', action='store_true', help="recompute the whole context for every token")
    args = parser.parse_args(argv)
    for name in ('num_samples', 'max_new_tokens'):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ('temperature', 'top_k'):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be 0 or more, got {getattr(args, name)}")

    try:
        ckpt = load_checkpoint(args.out_dir, args.device)
        encode, decode = get_tokenizer(ckpt['meta'])
        prompt = encode(read_prompt(args.start))
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # no or bad checkpoint, prompt file, tokenizer
        raise SystemExit(f"sample.py: {e}") from None
    if not prompt:
        parser.error("the prompt is empty; give --start some text")
    model, vocab = ckpt['model'], ckpt['meta']['vocab_size']
    torch.manual_seed(args.seed)
    idx = torch.tensor([prompt] * args.num_samples, dtype=torch.long, device=args.device)  # (num_samples, T)
    # bf16 on GPUs, as in training; the CPU samples in float32
    bf16 = torch.device(args.device).type == 'cuda' and torch.cuda.is_bf16_supported()
    with torch.autocast('cuda', dtype=torch.bfloat16) if bf16 else nullcontext():
        out = model.generate(idx, args.max_new_tokens, args.temperature, args.top_k or None,
                             use_cache=not args.no_cache)
    for row in out.tolist():
        # ids past the data's vocabulary are padding the model never saw as targets; drop any it samples
        print(decode([t for t in row if t < vocab]))
        print('-' * 40)


if __name__ == '__main__':
    main()
