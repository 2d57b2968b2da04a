"""
Download FineWeb-10B already tokenized with gpt2: the shards published as the Hugging Face dataset
kjj0/fineweb10B-gpt2 (about 100M tokens, 200 MB, per shard), in this project's shard format as they are.

    python data/fineweb/prepare.py [--num_shards 8] [--out_dir data/fineweb]

Fetches fineweb_val_000000.bin, fineweb_train_000001.bin ... up to --num_shards train shards, and the last
published train shard (000103) as the test split, fineweb_test_000103.bin: held-out text of its own, so that what
picks a setting (val) is not what reports it (test). Files already complete are skipped, and an interrupted
download resumes from its .part file, so simply run the command again after a failure.
"""
import argparse
import os
import sys

# the repo root, so that `data.shards` imports when this file runs as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.shards import describe_dataset, download, gpt2_meta, read_shard, write_meta  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_URL = 'https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main'
PUBLISHED_TRAIN_SHARDS = 103
MAX_TRAIN_SHARDS = PUBLISHED_TRAIN_SHARDS - 1  # the last one is the test split


def shard_names(num_train_shards):
    """[(the published file's name, its name here)]: val, the train shards, and the last train shard as test."""
    last = f"{PUBLISHED_TRAIN_SHARDS:06d}"
    names = ['fineweb_val_000000.bin'] + [f"fineweb_train_{i:06d}.bin" for i in range(1, num_train_shards + 1)]
    return [(name, name) for name in names] + [(f"fineweb_train_{last}.bin", f"fineweb_test_{last}.bin")]


def fetch_shard(url, path):
    """Download one shard (unless complete already) and check its header against its size."""
    try:
        download(url, path)
    except RuntimeError as e:  # offline, or the address is gone: one line, and the .part (if any) is kept
        raise SystemExit(str(e)) from None
    try:
        read_shard(path)
    except ValueError:
        os.remove(path)  # so that the next run fetches it afresh instead of skipping it as complete
        print(f"removed the bad file {path}; run again to download it anew", file=sys.stderr)
        raise
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Download gpt2-tokenized FineWeb-10B shards.")
    parser.add_argument('--num_shards', type=int, default=8, help=f"train shards, 1..{MAX_TRAIN_SHARDS}")
    parser.add_argument('--out_dir', default=HERE, help="where to write the shards and meta.json")
    parser.add_argument('--base_url', default=BASE_URL, help="where the shard files are served")
    args = parser.parse_args(argv)
    if not 1 <= args.num_shards <= MAX_TRAIN_SHARDS:
        parser.error(f"--num_shards must be in 1..{MAX_TRAIN_SHARDS}, got {args.num_shards}")

    os.makedirs(args.out_dir, exist_ok=True)
    paths = [fetch_shard(f"{args.base_url}/{remote}", os.path.join(args.out_dir, local))
             for remote, local in shard_names(args.num_shards)]
    source = (f"FineWeb-10B sample, gpt2 tokens (kjj0/fineweb10B-gpt2), {args.num_shards} train shards, train shard "
              f"{PUBLISHED_TRAIN_SHARDS} as test")
    paths.append(write_meta(args.out_dir, gpt2_meta(source)))
    print(describe_dataset(args.out_dir, 'fineweb'))
    return paths


if __name__ == '__main__':
    main()
