"""
Prepare the offline default corpus: this Python's own standard library source, as byte-level tokens.

    python data/stdlib/prepare.py [--max_mb 8] [--out_dir data/stdlib]

Needs no network and no tiktoken. The .py files under sysconfig's stdlib folder are taken in sorted path
order (test suites, idlelib and installed packages left out) until about --max_mb megabytes of source; each
file is one document, preceded by a NUL byte (token 0, meta's "eot"), which Python source never contains.
Every 20th document is held out, alternately to val and to test (so val picks settings and test reports
them on other files). Tokens are the UTF-8 bytes, so vocab_size is 256.
"""
import argparse
import os
import sys
import sysconfig

# the repo root, so that `data.shards` imports when this file runs as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.shards import describe_dataset, encode_documents, get_tokenizer, split_documents, write_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_DIRS = {'site-packages', 'dist-packages', 'test', 'tests', 'idlelib', '__pycache__'}


def find_sources(root):
    """Sorted paths, relative to root, of the .py files under it, outside SKIP_DIRS."""
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS]  # pruning in place keeps os.walk out of them
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith('.py')]
    return sorted(found)


def read_source(path):
    """The file's text, or None when it cannot be read as UTF-8 or holds a NUL (our document separator)."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return None
    return None if "\0" in text else text


def main(argv=None):
    parser = argparse.ArgumentParser(description="Byte-level dataset from the Python standard library's source.")
    parser.add_argument('--max_mb', type=float, default=8.0, help="stop after about this many MB of source")
    parser.add_argument('--out_dir', default=HERE, help="where to write the shards and meta.json")
    args = parser.parse_args(argv)
    if args.max_mb <= 0:
        parser.error(f"--max_mb must be positive, got {args.max_mb}")

    root = sysconfig.get_paths()['stdlib']
    docs, size = [], 0
    for rel in find_sources(root):
        if size >= args.max_mb * 1e6:
            break
        text = read_source(os.path.join(root, rel))
        if text is not None:
            docs.append(text)
            size += len(text)  # characters, which are bytes for all but a handful of stdlib files

    eot = 0
    meta = {'tokenizer': 'bytes', 'vocab_size': 256, 'eot': eot,
            'source': f"Python {sys.version.split()[0]} standard library, {len(docs)} .py files from {root}"}
    encode, _ = get_tokenizer(meta)
    try:
        train_docs, val_docs, test_docs = split_documents(docs, held_fraction=0.05)
    except ValueError as e:  # a --max_mb that takes fewer than 3 files: one line, with the way out
        raise SystemExit(f"--max_mb {args.max_mb:g}: {e}; raise --max_mb") from None
    paths = write_dataset(args.out_dir, 'stdlib', encode_documents(train_docs, encode, eot),
                          encode_documents(val_docs, encode, eot), meta,
                          test_tokens=encode_documents(test_docs, encode, eot))
    print(f"{len(docs)} files ({len(train_docs)} train, {len(val_docs)} val, {len(test_docs)} test) from {root}")
    print(describe_dataset(args.out_dir, 'stdlib'))
    return paths


if __name__ == '__main__':
    main()
