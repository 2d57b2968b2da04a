"""
Prepare Tiny Shakespeare at the character level: the vocabulary is its 65 distinct characters.

    python data/shakespeare_char/prepare.py [--input PATH] [--out_dir data/shakespeare_char]

Without --input the text is downloaded once and kept as input.txt in the output folder.
The first 90% of the characters are train; of the last 10%, the first half is val and the second half test
(held-out text of its own: val picks settings, test reports them).
"""
import argparse
import os
import sys

# the repo root, so that `data.shards` imports when this file runs as a script
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from data.shards import describe_dataset, download, get_tokenizer, write_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


def load_splits(input_path, out_dir, script):
    """Tiny Shakespeare as (train, val, test) texts, from input_path or else from a cached download."""
    try:
        path = input_path or download(URL, os.path.join(out_dir, 'input.txt'))
    except RuntimeError as e:  # offline, or the address is gone
        raise SystemExit(f"{e}; with a local copy of the text, run: python {script} --input FILE") from None
    with open(path, encoding='utf-8') as f:
        text = f.read()
    n, m = int(0.9 * len(text)), int(0.95 * len(text))
    return text[:n], text[n:m], text[m:]


def parse_args(argv, description):
    """The flags both Tiny Shakespeare scripts take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--input', help="a local copy of the text (default: download it once)")
    parser.add_argument('--out_dir', help="where to write the shards and meta.json (default: the script's folder)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv, "Character-level Tiny Shakespeare.")
    out_dir = args.out_dir or HERE
    train_text, val_text, test_text = load_splits(args.input, out_dir, 'data/shakespeare_char/prepare.py')
    chars = sorted(set(train_text + val_text + test_text))
    meta = {'tokenizer': 'char', 'vocab_size': len(chars), 'chars': ''.join(chars),
            'source': "Tiny Shakespeare, one token per character"}
    encode, _ = get_tokenizer(meta)
    paths = write_dataset(out_dir, 'shakespeare_char', encode(train_text), encode(val_text), meta,
                          test_tokens=encode(test_text))
    print(f"vocab_size {len(chars)}")
    print(describe_dataset(out_dir, 'shakespeare_char'))
    return paths


if __name__ == '__main__':
    main()
