"""
Greedy generation through an export against sample.py's, for the same tokens: transformers' generate (with the
export's KV cache, its window sliding past the context) and model.generate on the checkpoint (what
`sample.py --temperature=0` runs), each warmed up once, then timed in turns; the two must give the same tokens.

    python export_hf.py --out_dir=out --to=hf_out
    python hf/bench_generate.py --out_dir=out --to=hf_out --start="def " --max_new_tokens=300
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's root
from checkpoint import load_checkpoint  # noqa: E402
from data.shards import get_tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description="Time the export's generate against sample.py's.")
    parser.add_argument('--out_dir', default='out', help="the checkpoint's out_dir (default: out)")
    parser.add_argument('--to', default='hf_out', help="its export, from export_hf.py (default: hf_out)")
    parser.add_argument('--start', default='\n', help="the prompt")
    parser.add_argument('--max_new_tokens', type=int, default=300)
    parser.add_argument('--num_samples', type=int, default=1, help="rows generated at once")
    parser.add_argument('--repeats', type=int, default=3, help="timed runs of each, in turns (default: 3)")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM
    ckpt = load_checkpoint(args.out_dir, 'cpu')
    model, (encode, _) = ckpt['model'], get_tokenizer(ckpt['meta'])
    hf = AutoModelForCausalLM.from_pretrained(args.to, trust_remote_code=True).eval()
    idx = torch.tensor([encode(args.start)] * args.num_samples)  # (num_samples, T)
    n = args.max_new_tokens
    runs = {'sample.py': lambda: model.generate(idx, n, temperature=0),
            'export': lambda: hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False)}
    outputs = {name: run() for name, run in runs.items()}  # warm-up: compilation, caches, first allocations
    if outputs['export'].tolist() != outputs['sample.py'].tolist():
        raise SystemExit("bench_generate.py: the export's greedy tokens differ from sample.py's")
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{idx.shape[1]} prompt + {n} new tokens x {args.num_samples}, context {model.config.block_size}, "
          f"{torch.get_num_threads()} thread(s); the same tokens from both")
    for name, s in seconds.items():
        print(f"{name:10s} median {median[name]:.3f} s ({', '.join(f'{t:.3f}' for t in s)})")
    print(f"export / sample.py: {median['export'] / median['sample.py']:.2f}x")


if __name__ == '__main__':
    main()
