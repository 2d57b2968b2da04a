"""
Token shards on disk, the dataset's meta.json, and the loader that turns shards into training batches.

A shard is one binary file, byte-compatible with the llm.c / modded-nanogpt shards (e.g. their FineWeb ones):
    header: 256 little-endian int32; header[0] = magic, header[1] = version, header[2] = number of tokens
    body:   the tokens, uint16 (magic 20240520, version 1) or uint32 (magic 20240801, version 7)
A prepared dataset is a folder holding {name}_train_000000.bin ..., {name}_val_000000.bin ... and meta.json:
    {"tokenizer": "gpt2" | "bytes" | "char", "vocab_size": int, "chars": "..." (char only),
     "eot": int (the id that starts each document, if the dataset has one), "source": "what the text is"}
"""
import glob
import json
import os
import sys
from contextlib import contextmanager
from functools import partial
from multiprocessing import Pool

import numpy as np
import torch

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC_UINT16 = 20240520
MAGIC_UINT32 = 20240801
# magic -> (version, token dtype); the version paired with each magic is the one llm.c writes
FORMATS = {MAGIC_UINT16: (1, np.dtype('<u2')), MAGIC_UINT32: (7, np.dtype('<u4'))}

GPT2_VOCAB_SIZE = 50257
GPT2_EOT = 50256  # <|endoftext|>
# tokenizers whose vocabulary is fixed; "char" takes its size from its own character list
FIXED_VOCAB_SIZES = {'gpt2': GPT2_VOCAB_SIZE, 'bytes': 256}
# a loader keeps this many shards open: a shuffled batch reads from many, and opening one costs more than reading
# its rows, but each open shard holds a file descriptor, and a corpus of a thousand shards would use them all up
MAX_OPEN_SHARDS = 128


class ShardError(ValueError):
    """A shard or meta.json that cannot be trained on; the message names the file and what to do."""


@contextmanager
def atomic_file(path):
    """An open binary file that becomes path only once everything written to it is on disk: the writes go to
    path + '.tmp', which is flushed, fsync'ed and then renamed onto path when the block ends without error.

    A crash or Ctrl-C mid-write then leaves the old file (or none), never half a file; the temp's name is
    fixed, so a killed write leaves one file that the next write of path replaces.
    """
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it path
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, *chunks):
    """Write the bytes-like chunks to path, whole or not at all (atomic_file)."""
    with atomic_file(path) as f:
        for chunk in chunks:
            f.write(chunk)


# -----------------------------------------------------------------------------
# one shard: write, validate, read

def write_shard(path, tokens):
    """Write a 1-D sequence of token ids as one shard: uint16 when every id fits, else uint32."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(f"cannot write {path}: tokens must be a non-empty 1-D sequence, got shape {tokens.shape}")
    if tokens.dtype.kind not in 'iu':
        raise ValueError(f"cannot write {path}: token ids must be integers, got dtype {tokens.dtype}")
    if tokens.size >= 2**31:
        raise ValueError(f"cannot write {path}: {tokens.size:,} tokens overflow the header's int32 count; "
                         "split them over several shards (write_dataset does)")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= 2**32:
        raise ValueError(f"cannot write {path}: token ids must lie in [0, 2**32), got {lo}..{hi}")
    magic = MAGIC_UINT16 if hi < 2**16 else MAGIC_UINT32
    version, dtype = FORMATS[magic]
    header = np.zeros(HEADER_INTS, dtype='<i4')
    header[:3] = magic, version, tokens.size
    atomic_write(path, header, np.ascontiguousarray(tokens, dtype=dtype))


def shard_header(path):
    """Check path's header against the file's size; return (token dtype, number of tokens)."""
    size = os.path.getsize(path)
    remedy = "re-create it with the data/<name>/prepare.py script that made it"
    if size < HEADER_BYTES:
        raise ShardError(f"{path} is not a token shard: {size} bytes is less than the "
                         f"{HEADER_BYTES}-byte header (truncated?); {remedy}")
    magic, version, ntok = (int(v) for v in np.fromfile(path, dtype='<i4', count=3))
    if magic not in FORMATS:
        raise ShardError(f"{path} is not a token shard: magic number {magic}, expected {MAGIC_UINT16} (uint16) "
                         f"or {MAGIC_UINT32} (uint32); point the loader at files written by a prepare.py script")
    expected_version, dtype = FORMATS[magic]
    if version != expected_version:
        raise ShardError(f"{path} has unsupported shard version {version} (magic {magic} is read as version "
                         f"{expected_version} only); {remedy}")
    if ntok <= 0:
        raise ShardError(f"{path} holds no tokens (header count {ntok}); {remedy}")
    expected_size = HEADER_BYTES + ntok * dtype.itemsize
    if size != expected_size:
        raise ShardError(f"{path} is truncated or corrupt: its header promises {ntok:,} tokens "
                         f"({expected_size:,} bytes) but the file has {size:,} bytes; {remedy}")
    return dtype, ntok


def read_shard(path):
    """The shard's tokens as a read-only np.memmap: pages load from disk only when sliced."""
    dtype, ntok = shard_header(path)
    return np.memmap(path, dtype=dtype, mode='r', offset=HEADER_BYTES, shape=(ntok,))


# -----------------------------------------------------------------------------
# meta.json and the tokenizer it names

def _prepare_hint(data_dir):
    """How to create the dataset that belongs in data_dir, for error messages."""
    name = os.path.basename(os.path.abspath(data_dir))
    return f"create it with: python data/{name}/prepare.py (add --out_dir {data_dir} if it lives elsewhere)"


def check_meta(meta, where):
    """Raise a clear error unless meta describes a usable tokenizer; `where` names its origin."""
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: meta must be a JSON object, got {type(meta).__name__}")
    kind, vocab_size = meta.get('tokenizer'), meta.get('vocab_size')
    if kind not in ('gpt2', 'bytes', 'char'):
        raise ValueError(f"{where}: tokenizer must be 'gpt2', 'bytes' or 'char', got {kind!r}")
    if type(vocab_size) is not int or vocab_size < 1:
        raise ValueError(f"{where}: vocab_size must be a positive integer, got {vocab_size!r}")
    if kind in FIXED_VOCAB_SIZES and vocab_size != FIXED_VOCAB_SIZES[kind]:
        raise ValueError(f"{where}: the {kind} tokenizer has vocab_size {FIXED_VOCAB_SIZES[kind]}, not {vocab_size}")
    if kind == 'char':
        chars = meta.get('chars')
        if not isinstance(chars, str) or len(set(chars)) != len(chars) or len(chars) != vocab_size:
            raise ValueError(f"{where}: a char tokenizer needs 'chars', a string of vocab_size={vocab_size} "
                             "distinct characters (token i is chars[i])")
    eot = meta.get('eot')
    if eot is not None and (type(eot) is not int or not 0 <= eot < vocab_size):
        raise ValueError(f"{where}: eot must be a token id in [0, {vocab_size}), got {eot!r}")


def gpt2_meta(source):
    """meta.json for gpt2 BPE data: models round vocab_size up (50304), the data itself uses 50257 ids."""
    return {'tokenizer': 'gpt2', 'vocab_size': GPT2_VOCAB_SIZE, 'eot': GPT2_EOT, 'source': source}


def write_meta(out_dir, meta):
    """Validate meta and write it to out_dir/meta.json; return the path."""
    path = os.path.join(out_dir, 'meta.json')
    check_meta(meta, path)
    atomic_write(path, json.dumps(meta, indent=2).encode('utf-8'))
    return path


def read_meta(data_dir):
    """The dataset's meta.json as a dict."""
    path = os.path.join(data_dir, 'meta.json')
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {path}: the dataset is not prepared yet; {_prepare_hint(data_dir)}")
    with open(path, encoding='utf-8') as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); {_prepare_hint(data_dir)}") from None
    check_meta(meta, path)
    return meta


# the byte tokenizer's functions live at module level so that they pickle, e.g. into encode_documents' Pool
def _encode_bytes(text):
    return list(text.encode('utf-8'))


def _decode_bytes(ids):
    # a sampled sequence may stop inside a multi-byte character: show it as U+FFFD rather than fail
    return bytes(ids).decode('utf-8', errors='replace')


def get_tokenizer(meta):
    """(encode, decode) for the tokenizer meta names: encode str -> list[int], decode list[int] -> str."""
    check_meta(meta, 'meta')
    kind = meta['tokenizer']
    if kind == 'gpt2':
        try:
            import tiktoken  # imported here so that only gpt2 data needs it
        except ImportError:
            raise ImportError("gpt2 data needs tiktoken: pip install tiktoken") from None
        try:
            enc = tiktoken.get_encoding('gpt2')
        except Exception as e:  # offline: a connection error from deep inside tiktoken's download
            raise RuntimeError(f"tiktoken could not load the gpt2 encoding ({type(e).__name__}): it downloads it once, "
                               "then caches it; offline, set TIKTOKEN_CACHE_DIR to a folder that holds the cached "
                               "files, or use data that needs no download (data/stdlib, data/shakespeare_char "
                               "--input FILE)") from None
        # encode_ordinary: a literal "<|endoftext|>" in the text is plain text, never the eot id
        return enc.encode_ordinary, enc.decode
    if kind == 'bytes':
        return _encode_bytes, _decode_bytes
    chars = meta['chars']
    index = {c: i for i, c in enumerate(chars)}

    def encode(text):
        missing = set(text) - index.keys()
        if missing:
            raise ValueError(f"characters {sorted(missing)} are not in this dataset's {len(chars)}-character "
                             "vocabulary; use only characters from meta.json's 'chars'")
        return [index[c] for c in text]

    def decode(ids):
        return ''.join(chars[i] for i in ids)

    return encode, decode


# -----------------------------------------------------------------------------
# preparing a dataset: split documents, tokenize them, write the shards

def split_documents(docs, held_fraction):
    """Split docs into (train, val, test), the same every run: an evenly spaced held_fraction of them is held
    out, alternately to val and to test (val picks settings, test reports them), at least one document each."""
    if not 0 < held_fraction < 1:
        raise ValueError(f"the held-out fraction must lie strictly between 0 and 1, got {held_fraction}")
    if len(docs) < 3:
        raise ValueError(f"need at least 3 documents to split train/val/test by document, got {len(docs)}; "
                         "add more files (or split a large one into several)")
    # doc i is held out when the running count i * held_fraction crosses an integer: e.g. 0.05 -> every 20th
    is_held = [int((i + 1) * held_fraction) > int(i * held_fraction) for i in range(len(docs))]
    train = [d for d, h in zip(docs, is_held) if not h]
    held = [d for d, h in zip(docs, is_held) if h]
    while len(held) < 2:  # a corpus too small for two crossings holds out its last training documents too
        held.append(train.pop())
    return train, held[0::2], held[1::2]


def _encode_to_array(encode, doc):
    # a compact array travels back from a pool worker far faster than a list of Python ints
    return np.asarray(encode(doc), dtype=np.uint32)


def encode_documents(docs, encode, eot=None, processes=1):
    """Tokenize docs in order into one 1-D array, with the eot id (if given) before each document.

    With processes > 1 the documents are encoded by a multiprocessing Pool, so encode must pickle
    (a module-level function, or tiktoken's encode_ordinary).
    """
    if not docs:
        raise ValueError("no documents to encode")
    work = partial(_encode_to_array, encode)
    if processes > 1:
        with Pool(processes) as pool:
            arrays = pool.map(work, docs, chunksize=16)
    else:
        arrays = [work(doc) for doc in docs]
    if eot is not None:
        eot_array = np.array([eot], dtype=np.uint32)
        arrays = [part for array in arrays for part in (eot_array, array)]
    return np.concatenate(arrays)


def write_dataset(out_dir, name, train_tokens, val_tokens, meta, shard_tokens=100_000_000, test_tokens=None):
    """Write the splits as {name}_{split}_000000.bin ... (at most shard_tokens each) and meta.json: train, val,
    and test when given (held-out text of its own, so that what picks a setting is not what reports it).

    Returns the paths written: train shards, val shards, test shards, meta.json.
    """
    check_meta(meta, f"meta for {out_dir}")
    if type(shard_tokens) is not int or shard_tokens < 1:
        raise ValueError(f"shard_tokens must be a positive integer, got {shard_tokens!r}")
    os.makedirs(out_dir, exist_ok=True)
    # temps of a write that was killed (atomic_write's fixed names); the files they were for are whole or absent
    for stale in glob.glob(os.path.join(glob.escape(out_dir), f"{name}_*.bin.tmp")) + \
            glob.glob(os.path.join(glob.escape(out_dir), 'meta.json.tmp')):
        os.remove(stale)
    paths = []
    splits = [('train', train_tokens), ('val', val_tokens)] + [('test', test_tokens)] * (test_tokens is not None)
    for split, tokens in splits:
        tokens = np.asarray(tokens)
        if tokens.size == 0:
            raise ValueError(f"the {split} split of {name} has no tokens; give the prepare script more text")
        if tokens.max() >= meta['vocab_size']:
            raise ValueError(f"the {split} split of {name} holds token id {tokens.max()}, "
                             f">= the vocab_size {meta['vocab_size']} in its meta")
        # equal-sized shards: no tiny last shard that could not hold even one batch
        num_shards = -(-tokens.size // shard_tokens)
        written = []
        for i, chunk in enumerate(np.array_split(tokens, num_shards)):
            written.append(os.path.join(out_dir, f"{name}_{split}_{i:06d}.bin"))
            write_shard(written[-1], chunk)
        # shards left over from an earlier, bigger run would otherwise join this dataset through the loader's glob
        for stale in set(glob.glob(os.path.join(glob.escape(out_dir), f"{name}_{split}_*.bin"))) - set(written):
            os.remove(stale)
        paths += written
    paths.append(write_meta(out_dir, meta))
    return paths


def describe_dataset(data_dir, name):
    """A few lines saying how many tokens and shards each split of a prepared dataset holds."""
    lines = [f"{data_dir}:"]
    for split in ('train', 'val', 'test'):
        paths = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"{name}_{split}_*.bin")))
        if split == 'test' and not paths:
            continue
        ntok = sum(shard_header(path)[1] for path in paths)
        lines.append(f"  {split}: {ntok:,} tokens in {len(paths)} shard(s): {name}_{split}_*.bin")
    lines.append("  meta.json")
    return "\n".join(lines)


def download(url, path, chunk_bytes=1 << 20):
    """Download url to path, with progress; a finished path is kept, a partial path + '.part' is resumed."""
    if os.path.exists(path):
        return path
    import requests  # imported here so that only downloads need it

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + '.part'
    have = os.path.getsize(part) if os.path.exists(part) else 0
    # identity encoding: byte counts and Range offsets must refer to the file itself, not a gzipped form of it
    headers = {'Accept-Encoding': 'identity'}
    if have:
        headers['Range'] = f"bytes={have}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=60) as r:
            if r.status_code == 416:  # the .part already reaches the end (whole, or bad): start over
                os.remove(part)
                return download(url, path, chunk_bytes)
            r.raise_for_status()
            if r.status_code != 206:  # the server ignored the Range and sends the whole file
                have = 0
            total = have + int(r.headers.get('Content-Length', 0))
            with open(part, 'ab' if have else 'wb') as f:
                for chunk in r.iter_content(chunk_bytes):
                    f.write(chunk)
                    have += len(chunk)
                    print(f"\r{os.path.basename(path)}: {have / 1e6:,.1f} / {total / 1e6:,.1f} MB",
                          end='', file=sys.stderr, flush=True)
            print(file=sys.stderr)
    except requests.RequestException as e:
        again = f"; running the same command again resumes from {part}" if os.path.exists(part) else ''
        raise RuntimeError(f"could not download {url} ({type(e).__name__}){again}") from None
    if have < total:
        raise RuntimeError(f"the download of {url} stopped at {have:,} of {total:,} bytes; "
                           f"running the same command again resumes from {part}")
    os.replace(part, path)
    return path


# -----------------------------------------------------------------------------
# the loader

class ShardLoader:
    """Streams (x, y) batches from the shards matching a glob pattern, like llm.c's distributed loader.

    A batch is B windows of T + 1 tokens (B = batch_size, T = block_size): x is each window less its last token,
    y each less its first. Shards are cut into windows T tokens apart, so that a window's last token (a target) is
    the next one's first (an input). Each step, all ranks together take the next B*world_size windows and rank r
    reads B of them from the r*B-th, so world_size ranks with batch B see exactly the rows that one rank with batch
    B*world_size would.

    seed None, in order (validation, so that every run is measured on the same batches): a step's windows are one
    span of B*T*world_size tokens; a span that does not fit in the rest of a shard moves on to the next shard, and
    after the last shard the loader wraps around to the first (a new epoch).
    seed an int, shuffled (training): each epoch reads all its windows once, in a random order. The epochs make
    one stream, cut into steps wherever they fall (a step may end one epoch and begin the next), so any split of a
    step over ranks and micro-steps reads the same windows. The order and the windows' start offset are a pure
    function of (seed, epoch): a resumed run recomputes them. The order costs 4 bytes per window and a few seconds
    per 10 M windows once an epoch (10 B tokens at block_size 1024 are 10 M windows: 40 MB); a corpus of billions
    of windows would rather shuffle the shards, then the windows within each.
    spread an int, evaluation: `spread` steps whose windows lie evenly spaced over all the shards' tokens, so that
    an evaluation of that many steps measures the whole split rather than its first tokens; the same every pass
    (reset), then again from the first.
    vocab_size: the data's vocabulary (its meta.json's): each shard is checked once, when first opened, to
    hold no id at or above it.
    """

    def __init__(self, pattern, batch_size, block_size, rank=0, world_size=1, vocab_size=None, seed=None,
                 spread=None):
        for name, value in (('batch_size', batch_size), ('block_size', block_size), ('world_size', world_size)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if type(rank) is not int or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
        if seed is not None and (type(seed) is not int or seed < 0):
            raise ValueError(f"seed must be a non-negative integer (shuffled) or None (in order), got {seed!r}")
        if spread is not None and (type(spread) is not int or spread < 1 or seed is not None):
            raise ValueError(f"spread must be a positive integer of steps, without a seed, got {spread!r}")
        self.files = sorted(glob.glob(pattern))
        if not self.files:
            raise FileNotFoundError(f"no shards match {pattern!r}; {_prepare_hint(os.path.dirname(pattern))}")
        self.B, self.T = batch_size, block_size
        self.rank, self.world_size, self.vocab_size, self.seed, self.spread = rank, world_size, vocab_size, seed, spread
        self.checked = set()  # the shards whose ids are known to fit vocab_size
        self.opened = {}  # shard -> its tokens, the most recently opened last
        self.span = batch_size * block_size * world_size
        # check every header now, so that a bad shard fails at start-up rather than hours into training
        self.sizes = np.array([shard_header(path)[1] for path in self.files])
        for path, ntok in zip(self.files, self.sizes):
            if ntok < self.span + 1:
                raise ShardError(f"{path} holds {ntok:,} tokens, fewer than one step needs (batch_size {batch_size}"
                                 f" x block_size {block_size} x world_size {world_size} + 1 = {self.span + 1:,}); "
                                 "use a smaller batch_size/block_size or more data")
        self.reset()

    def reset(self):
        """Go back to the start: of the first shard in order (e.g. before each validation pass), of epoch 0 shuffled."""
        if self.spread:
            self.index = 0
        elif self.seed is None:
            self._seek(0, 0)
        else:
            self._start_epoch(0)

    def _open(self, shard):
        """The shard's tokens (a memmap), checked against vocab_size the first time it opens."""
        if shard in self.opened:
            return self.opened[shard]
        if len(self.opened) == MAX_OPEN_SHARDS:
            del self.opened[next(iter(self.opened))]  # the one opened longest ago
        tokens = read_shard(self.files[shard])
        if self.vocab_size is not None and shard not in self.checked:
            # once per shard: one pass over it (about 0.1 s for 100 M tokens), then no check per batch
            top = int(tokens.max())
            if top >= self.vocab_size:
                name = os.path.basename(os.path.dirname(os.path.abspath(self.files[shard])))
                raise ShardError(f"{self.files[shard]} holds token id {top}, but its meta.json says vocab_size "
                                 f"{self.vocab_size}: the shard disagrees with its meta.json; re-prepare the dataset "
                                 f"(python data/{name}/prepare.py)")
            self.checked.add(shard)
        self.opened[shard] = tokens  # only once checked, so that a bad shard is never served
        return tokens

    def next_batch(self):
        """This rank's next (x, y): int64 CPU tensors of shape (B, T), y being x shifted left by one token."""
        windows = self._spread() if self.spread else self._in_order() if self.seed is None else self._shuffled()
        windows = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    # in order ----------------------------------------------------------------

    def _seek(self, shard, pos):
        self.shard, self.pos = shard, pos
        self.tokens = self._open(shard)

    def _in_order(self):
        B, T = self.B, self.T
        if self.pos + self.span + 1 > len(self.tokens):
            self._seek((self.shard + 1) % len(self.files), 0)
        start = self.pos + self.rank * B * T
        self.pos += self.span
        return np.lib.stride_tricks.sliding_window_view(self.tokens[start : start + B * T + 1], T + 1)[::T]

    # spread evenly -----------------------------------------------------------

    def _spread(self):
        B, T = self.B, self.T
        count = self.spread * B * self.world_size  # every pass's windows, all ranks together
        usable = self.sizes - T  # window starts per shard: 0 .. size - T - 1, so that a window holds T + 1 tokens
        ends = np.cumsum(usable)
        first = (self.index % self.spread) * B * self.world_size + self.rank * B
        points = (np.arange(first, first + B) * int(ends[-1])) // count  # evenly spaced over all the starts
        shards = np.searchsorted(ends, points, side='right')
        self.index += 1
        return np.stack([self._open(shard)[start : start + T + 1]
                         for shard, start in zip(shards, points - (ends - usable)[shards])])

    # shuffled ----------------------------------------------------------------

    def _start_epoch(self, epoch):
        """Lay out epoch's windows and draw their order: a pure function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])  # its own generator: no other code's draws move it
        # a new start offset each epoch, so that a second epoch reads new sequences rather than the first's again;
        # below max(sizes) - T, so that the largest shard keeps a window and no epoch is empty
        self.offset = int(rng.integers(min(self.T, self.sizes.max() - self.T)))
        counts = (self.sizes - 1 - self.offset) // self.T  # windows per shard
        self.ends = np.cumsum(counts)  # window ids below ends[s] lie in shards 0..s
        self.firsts = self.ends - counts  # the id of each shard's first window
        n = int(self.ends[-1])
        self.order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
        rng.shuffle(self.order)
        self.epoch, self.index = epoch, 0  # index: how many of the epoch's windows are read

    def _take(self, n):
        """The stream's next n windows as (shards, starts), moving into the next epoch when this one is read."""
        shards, starts = [], []
        while n:
            if self.index >= len(self.order):
                self._start_epoch(self.epoch + 1)
            ids = self.order[self.index : self.index + n]
            self.index += len(ids)
            n -= len(ids)
            shard = np.searchsorted(self.ends, ids, side='right')
            shards.append(shard)
            starts.append(self.offset + (ids - self.firsts[shard]) * self.T)
        return np.concatenate(shards), np.concatenate(starts)

    def _shuffled(self):
        B, T = self.B, self.T
        shards, starts = self._take(B * self.world_size)  # every rank takes the whole step, then reads its part
        mine = slice(self.rank * B, (self.rank + 1) * B)
        shards, starts = shards[mine], starts[mine]
        return np.stack([self._open(shard)[start : start + T + 1] for shard, start in zip(shards, starts)])

    # resuming ----------------------------------------------------------------

    def state_dict(self):
        """Where the loader is; the same on every rank, so rank 0's copy can restore them all."""
        if self.seed is None:
            return {'shard': self.shard, 'pos': self.pos, 'file': os.path.basename(self.files[self.shard])}
        # not the order: it is recomputed from (seed, epoch), the same under the same numpy (whose Generator
        # streams are stable in practice, not by promise); files and block_size say what the windows were
        return {'seed': self.seed, 'epoch': self.epoch, 'index': self.index, 'block_size': self.T,
                'files': [os.path.basename(path) for path in self.files]}

    def load_state_dict(self, state):
        """Go on exactly where state_dict() left off. The state decides the order: a run that began in order (or
        was saved before loaders shuffled) reads on in order, a shuffled one with its own seed, whatever this
        loader's seed; the stream is the one the run began with."""
        if 'seed' not in state:
            shard, name = state['shard'], state['file']
            if not shard < len(self.files) or os.path.basename(self.files[shard]) != name:
                raise ShardError(f"the saved loader position is in shard {shard} ({name}), but the pattern now "
                                 f"matches {len(self.files)} different files; resume with the same data the run "
                                 "started with")
            self.seed = None
            self._seek(shard, state['pos'])
            return
        names = [os.path.basename(path) for path in self.files]
        if (state['files'], state['block_size']) != (names, self.T):
            raise ShardError(f"the saved loader shuffled windows of block_size {state['block_size']} over "
                             f"{len(state['files'])} shards ({state['files'][0]}, ...), but this one has block_size "
                             f"{self.T} over {len(names)} ({names[0]}, ...); resume with the same data and block_size "
                             "the run started with")
        self.seed = state['seed']
        self._start_epoch(state['epoch'])
        self.index = state['index']
