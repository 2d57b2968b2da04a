"""
Prepare Tiny Shakespeare as gpt2 BPE tokens (338,025 in all; vocab_size 50257, which models pad to 50304).

    python data/shakespeare/prepare.py [--input PATH] [--out_dir data/shakespeare]

The text and its 90/5/5 train/val/test split are the character-level version's; needs tiktoken.
"""
import os
import sys

# the repo root, so that `data.shards` imports when this file runs as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.shakespeare_char.prepare import load_splits, parse_args  # noqa: E402
from data.shards import describe_dataset, get_tokenizer, gpt2_meta, write_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    args = parse_args(argv, "Tiny Shakespeare as gpt2 BPE tokens.")
    out_dir = args.out_dir or HERE
    meta = gpt2_meta("Tiny Shakespeare, gpt2 BPE")
    try:
        encode, _ = get_tokenizer(meta)  # first, so that a missing tiktoken fails before any download
    except (ImportError, RuntimeError) as e:
        raise SystemExit(str(e)) from None
    train_text, val_text, test_text = load_splits(args.input, out_dir, 'data/shakespeare/prepare.py')
    paths = write_dataset(out_dir, 'shakespeare', encode(train_text), encode(val_text), meta,
                          test_tokens=encode(test_text))
    print(describe_dataset(out_dir, 'shakespeare'))
    return paths


if __name__ == '__main__':
    main()
