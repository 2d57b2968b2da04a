"""
Prepare your own UTF-8 text files as gpt2 BPE shards: one document per file, <|endoftext|> before each.

    python data/text/prepare.py --input notes/ "books/*.txt" essay.md [--val_fraction 0.05]
        [--shard_tokens 100000000] [--processes N] [--out_dir data/text]

Folders are read recursively (hidden files and folders skipped) and globs may use **. Files are taken in
sorted path order; an evenly spaced --val_fraction of them goes to val and as many again to test (alternately:
val picks settings, test reports them), so every run gives the same shards. Encoding uses all CPU cores; the
tokens are held in memory (4 bytes each) until written.
"""
import argparse
import glob
import os
import sys

# the repo root, so that `data.shards` imports when this file runs as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.shards import (describe_dataset, encode_documents, get_tokenizer, gpt2_meta,  # noqa: E402
                         split_documents, write_dataset)

HERE = os.path.dirname(os.path.abspath(__file__))


def find_files(inputs):
    """Expand files, folders and glob patterns into one sorted list of files."""
    found = set()
    for item in inputs:
        if os.path.isfile(item):
            found.add(item)
        elif os.path.isdir(item):
            for folder, subdirs, files in os.walk(item):
                subdirs[:] = [d for d in subdirs if not d.startswith('.')]  # pruning in place skips them
                found.update(os.path.join(folder, f) for f in files if not f.startswith('.'))
        else:
            matches = [path for path in glob.glob(item, recursive=True) if os.path.isfile(path)]
            if not matches:
                raise FileNotFoundError(f"--input {item!r} is not a file, a folder, or a pattern matching any file")
            found.update(matches)
    return sorted(found)


def read_text(path):
    # newline="" keeps the text exactly as it is on disk, \r\n included
    try:
        with open(path, encoding='utf-8', newline='') as f:
            return f.read()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; convert it (e.g. iconv -t UTF-8) or leave it out") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description="gpt2 BPE shards from your own text files.")
    parser.add_argument('--input', nargs='+', required=True, help="text files, folders or glob patterns")
    parser.add_argument('--val_fraction', type=float, default=0.05,
                        help="share of the files that go to val; as many again go to test")
    parser.add_argument('--shard_tokens', type=int, default=100_000_000, help="most tokens in one shard")
    parser.add_argument('--processes', type=int, default=os.cpu_count(), help="encoding processes")
    parser.add_argument('--out_dir', default=HERE, help="where to write the shards and meta.json")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    if not 0 < args.val_fraction < 0.5:
        parser.error(f"--val_fraction must lie strictly between 0 and 0.5 (as many files again go to test), got "
                     f"{args.val_fraction}")

    try:  # a bad --input (nothing found, too few files, not UTF-8) is one line for the user, not a traceback
        files = find_files(args.input)
        train_docs, val_docs, test_docs = split_documents([read_text(path) for path in files], 2 * args.val_fraction)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    meta = gpt2_meta(f"{len(files)} text files from {' '.join(args.input)}")
    try:
        encode, _ = get_tokenizer(meta)
    except (ImportError, RuntimeError) as e:
        raise SystemExit(str(e)) from None
    train, val, test = (encode_documents(docs, encode, meta['eot'], args.processes)
                        for docs in (train_docs, val_docs, test_docs))
    paths = write_dataset(args.out_dir, 'text', train, val, meta, args.shard_tokens, test_tokens=test)
    print(f"{len(files)} files ({len(train_docs)} train, {len(val_docs)} val, {len(test_docs)} test)")
    print(describe_dataset(args.out_dir, 'text'))
    return paths


if __name__ == '__main__':
    main()
