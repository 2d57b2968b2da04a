"""
Tests for data/: the shard format, the loader, and every prepare script on local input (no internet).

    python -m pytest -q test_data.py
"""
import ast
import os
import pickle
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from data import shards
from data.fineweb import prepare as fineweb
from data.shakespeare import prepare as shakespeare
from data.shakespeare_char import prepare as shakespeare_char
from data.shards import (ShardError, ShardLoader, atomic_write, get_tokenizer, read_meta, read_shard, write_dataset,
                         write_shard)
from data.stdlib import prepare as stdlib
from data.text import prepare as text

# inputs shared by developer machines and CI; a user's checkout has no ../shared, so tests skip without it
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'shared')
SHAKESPEARE = os.path.join(SHARED, 'data', 'tinyshakespeare.txt')
TIKTOKEN_CACHE = os.path.join(SHARED, 'tiktoken_cache')

needs_shakespeare = pytest.mark.skipif(not os.path.exists(SHAKESPEARE), reason=f"no local copy at {SHAKESPEARE}")


@pytest.fixture
def gpt2(monkeypatch):
    """The gpt2 (encode, decode), loaded offline from ../shared when it is there; skip when it cannot load."""
    if os.path.isdir(TIKTOKEN_CACHE):
        monkeypatch.setenv('TIKTOKEN_CACHE_DIR', TIKTOKEN_CACHE)
    try:
        return get_tokenizer(shards.gpt2_meta('test'))
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"tiktoken's gpt2 encoding is unavailable offline: {e}")


def header_of(path):
    return np.fromfile(path, dtype='<i4', count=3).tolist()


# -----------------------------------------------------------------------------
# the shard format

def test_uint16_round_trip(tmp_path):
    path = str(tmp_path / 'a.bin')
    tokens = np.random.default_rng(0).integers(0, 2**16, size=1000)
    write_shard(path, tokens)
    assert header_of(path) == [20240520, 1, 1000]
    assert os.path.getsize(path) == 1024 + 2 * 1000
    read = read_shard(path)
    assert isinstance(read, np.memmap) and read.dtype == np.uint16
    np.testing.assert_array_equal(read, tokens)


def test_uint32_round_trip(tmp_path):
    path = str(tmp_path / 'a.bin')
    tokens = [0, 5, 65535, 65536, 2**32 - 1]
    write_shard(path, tokens)
    assert header_of(path) == [20240801, 7, 5]
    assert os.path.getsize(path) == 1024 + 4 * 5
    read = read_shard(path)
    assert read.dtype == np.uint32
    assert read.tolist() == tokens


@pytest.mark.parametrize("tokens, complaint", [
    ([[1, 2], [3, 4]], '1-D'), ([], 'non-empty'), ([1.5, 2.0], 'integers'), ([3, -1], "[0, 2**32)"),
])
def test_write_shard_rejects_bad_tokens(tmp_path, tokens, complaint):
    path = str(tmp_path / 'a.bin')
    with pytest.raises(ValueError, match=r"a\.bin") as e:
        write_shard(path, tokens)
    assert complaint in str(e.value)
    assert os.listdir(tmp_path) == []


def corrupt(path, case):
    """Damage a valid shard at path the way `case` says."""
    data = bytearray(open(path, 'rb').read())
    if case == 'magic':
        data[0:4] = np.int32(12345).tobytes()
    elif case == 'version':
        data[4:8] = np.int32(2).tobytes()
    elif case == 'truncated':
        data = data[:-3]
    elif case == "no header":
        data = data[:100]
    atomic_write(path, bytes(data))  # a new file: a loader that maps the old one keeps it whole


@pytest.mark.parametrize("case, complaint", [
    ('magic', "not a token shard"), ('version', "unsupported shard version"),
    ('truncated', 'truncated'), ("no header", "not a token shard"),
])
def test_corrupt_shard_errors_name_the_file(tmp_path, case, complaint):
    path = str(tmp_path / 'broken_000000.bin')
    write_shard(path, np.arange(100))
    corrupt(path, case)
    with pytest.raises(ValueError, match=complaint) as e:
        read_shard(path)
    assert path in str(e.value) and 'prepare' in str(e.value)
    with pytest.raises(ValueError, match=complaint):  # the loader checks every shard up front
        ShardLoader(str(tmp_path / '*.bin'), 2, 4)


def test_token_beyond_vocab_names_the_shard_when_it_opens(tmp_path):
    for i, top in enumerate((50, 100)):  # the second shard holds ids up to 99
        write_shard(str(tmp_path / f"d_train_{i:06d}.bin"), np.arange(top))
    loader = ShardLoader(str(tmp_path / 'd_train_*.bin'), 2, 4, vocab_size=100)
    for _ in range(20):
        loader.next_batch()  # ids 0..99 all fit, in both shards
    loader = ShardLoader(str(tmp_path / 'd_train_*.bin'), 2, 4, vocab_size=50)
    for _ in range(5):
        loader.next_batch()  # the first shard fits
    with pytest.raises(ShardError, match=r"d_train_000001.bin holds token id 99, but its meta.json says "
                                         r"vocab_size 50: .* re-prepare the dataset \(python data/") as e:
        for _ in range(10):
            loader.next_batch()  # the second shard opens
    assert "\n" not in str(e.value)
    with pytest.raises(ShardError, match="d_train_000000.bin holds token id 49"):  # checked when opened first
        ShardLoader(str(tmp_path / 'd_train_*.bin'), 2, 4, vocab_size=40)


def test_atomic_write_leaves_no_temp_and_prepare_clears_stale_ones(tmp_path, monkeypatch):
    path = str(tmp_path / 'a.bin')
    atomic_write(path, b'old')
    synced = []
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd))
    with pytest.raises(TypeError):  # fails mid-write: the old file stays, no temp is left
        atomic_write(path, b'new', object())
    assert open(path, 'rb').read() == b'old' and os.listdir(tmp_path) == ['a.bin']
    atomic_write(path, b'new')
    assert open(path, 'rb').read() == b'new' and os.listdir(tmp_path) == ['a.bin'] and synced
    # a write killed outright leaves its temp (fixed name): the next write_dataset in that folder clears it
    meta = {'tokenizer': 'bytes', 'vocab_size': 256, 'source': 'test'}
    for stale in ('d_train_000003.bin.tmp', 'meta.json.tmp'):
        (tmp_path / stale).write_bytes(b'half')
    write_dataset(str(tmp_path), 'd', np.arange(100) % 256, np.arange(50), meta)
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


# -----------------------------------------------------------------------------
# the loader

def test_missing_pattern_says_how_to_fix(tmp_path):
    pattern = str(tmp_path / 'mydata' / '*_train_*.bin')
    with pytest.raises(FileNotFoundError) as e:
        ShardLoader(pattern, 2, 4)
    assert pattern in str(e.value) and "python data/mydata/prepare.py" in str(e.value)


def test_shard_too_small_for_one_step(tmp_path):
    write_shard(str(tmp_path / 'd_train_000000.bin'), np.arange(16))
    with pytest.raises(ValueError, match="smaller batch_size/block_size or more data"):
        ShardLoader(str(tmp_path / 'd_train_*.bin'), 2, 8)  # 2*8 + 1 = 17 tokens needed
    ShardLoader(str(tmp_path / 'd_train_*.bin'), 3, 5)  # 16 tokens suffice for 3*5 + 1


@pytest.mark.parametrize('kwargs', [dict(batch_size=0), dict(block_size=2.5), dict(rank=2, world_size=2),
                                    dict(seed=-1), dict(seed='7'), dict(spread=0), dict(spread=2, seed=1)])
def test_loader_rejects_bad_arguments(tmp_path, kwargs):
    write_shard(str(tmp_path / 'd_000000.bin'), np.arange(100))
    args = dict(batch_size=2, block_size=4) | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ShardLoader(str(tmp_path / '*.bin'), **args)


@pytest.fixture
def two_shards(tmp_path):
    """Two shards of distinct token ids: 0..99 and 1000..1069; returns (pattern, [shard arrays])."""
    data = [np.arange(100), np.arange(1000, 1070)]
    for i, tokens in enumerate(data):
        write_shard(str(tmp_path / f"d_train_{i:06d}.bin"), tokens)
    return str(tmp_path / 'd_train_*.bin'), data


def test_batches_cross_shards_and_wrap(two_shards):
    pattern, data = two_shards
    loader = ShardLoader(pattern, batch_size=2, block_size=8)  # a step spans 16 tokens and reads 17
    # shard 0 (100 tokens) fits steps at 0, 16, ..., 80 (80 + 17 <= 100), shard 1 (70) at 0, 16, 32, 48;
    # then the loader wraps around to shard 0
    expected = [(0, p) for p in range(0, 81, 16)] + [(1, p) for p in range(0, 49, 16)] + [(0, 0), (0, 16)]
    for shard, pos in expected:
        x, y = loader.next_batch()
        assert x.shape == y.shape == (2, 8) and x.dtype == y.dtype == torch.int64
        window = torch.from_numpy(data[shard][pos : pos + 17].astype(np.int64))
        assert torch.equal(x.flatten(), window[:-1]) and torch.equal(y.flatten(), window[1:])


def test_spread_windows_cover_every_shard_evenly_and_repeat(two_shards):
    pattern, data = two_shards
    # window starts 0..91 in shard 0 and 0..61 in shard 1 (each window reads 9 tokens): 154 in all, and 3 steps
    # of 2 windows take every 154 / 6-th, whichever shard it falls in
    loader = ShardLoader(pattern, batch_size=2, block_size=8, spread=3)
    starts = [(0, 0), (0, 25), (0, 51), (0, 77), (1, 102 - 92), (1, 128 - 92)]
    firsts = [x[:, 0].tolist() for x, _ in (loader.next_batch() for _ in range(3))]
    assert firsts == [[data[s][p] for s, p in starts[i:i + 2]] for i in (0, 2, 4)]
    x, y = loader.next_batch()  # the pass is over: it starts again
    assert x[:, 0].tolist() == firsts[0] and torch.equal(x[:, 1:], y[:, :-1])
    loader.reset()
    assert loader.next_batch()[0][:, 0].tolist() == firsts[0]
    # two ranks with a batch of 1 read the rows of one rank with a batch of 2
    ranks = [ShardLoader(pattern, 1, 8, rank=r, world_size=2, spread=3) for r in range(2)]
    assert [[ranks[r].next_batch()[0][0, 0].item() for r in range(2)] for _ in range(3)] == firsts


def test_state_round_trip_and_reset(two_shards):
    pattern, _ = two_shards
    loader = ShardLoader(pattern, batch_size=2, block_size=8)
    first = loader.next_batch()
    for _ in range(4):
        loader.next_batch()
    state = pickle.loads(pickle.dumps(loader.state_dict()))
    ahead = [loader.next_batch() for _ in range(9)]  # crosses into shard 1 and wraps to shard 0
    resumed = ShardLoader(pattern, batch_size=2, block_size=8)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(ahead, [resumed.next_batch() for _ in range(9)]):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    loader.reset()
    assert all(torch.equal(a, b) for a, b in zip(loader.next_batch(), first))


def test_state_from_other_data_is_refused(two_shards, tmp_path):
    pattern, _ = two_shards
    loader = ShardLoader(pattern, batch_size=2, block_size=8)
    for _ in range(7):
        loader.next_batch()  # now in shard 1
    write_shard(str(tmp_path / 'other_000000.bin'), np.arange(100))
    other = ShardLoader(str(tmp_path / 'other_*.bin'), batch_size=2, block_size=8)
    with pytest.raises(ValueError, match="same data"):
        other.load_state_dict(loader.state_dict())
    shuffled = ShardLoader(pattern, batch_size=2, block_size=8, seed=1).state_dict()
    with pytest.raises(ValueError, match="same data"):
        ShardLoader(str(tmp_path / 'other_*.bin'), batch_size=2, block_size=8).load_state_dict(shuffled)
    with pytest.raises(ValueError, match=r"block_size 8 over 2 shards .* block_size 4 over 2"):
        ShardLoader(pattern, batch_size=2, block_size=4).load_state_dict(shuffled)


def test_two_ranks_see_the_rows_of_one_rank_with_twice_the_batch(tmp_path):
    for i, size in enumerate([200, 130, 170]):
        write_shard(str(tmp_path / f"d_train_{i:06d}.bin"), np.arange(size) + 1000 * i)
    pattern = str(tmp_path / 'd_train_*.bin')
    single = ShardLoader(pattern, batch_size=4, block_size=5)
    ranks = [ShardLoader(pattern, batch_size=2, block_size=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(30):  # several epochs over all three shards
        x, y = single.next_batch()
        (x0, y0), (x1, y1) = [loader.next_batch() for loader in ranks]
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
        assert not torch.equal(x0, x1)


def stream(loader, batches):
    """The windows that the loader's next `batches` batches hold, one row each: x with y's last token added."""
    return torch.cat([torch.cat([x, y[:, -1:]], dim=1) for x, y in (loader.next_batch() for _ in range(batches))])


def test_shuffled_epochs_read_every_window_once(two_shards):
    pattern, data = two_shards  # ids 0..99 and 1000..1069: id % 1000 is a token's place in its shard
    loader = ShardLoader(pattern, batch_size=1, block_size=8, seed=3)
    epochs = {}
    for _ in range(100):
        window = stream(loader, 1)[0].tolist()
        epochs.setdefault(loader.state_dict()['epoch'], []).append(window)
    del epochs[max(epochs)]  # unfinished
    assert len(epochs) >= 3
    offsets = []
    for windows in epochs.values():
        offset = windows[0][0] % 1000 % 8  # where this epoch's windows start
        every = [tokens[p : p + 9].tolist() for tokens in data for p in range(offset, len(tokens) - 8, 8)]
        assert sorted(windows) == sorted(every) and windows != every
        offsets.append(offset)
    assert len(set(offsets)) > 1  # the windows move from epoch to epoch


def test_the_seed_decides_the_order(two_shards):
    pattern, _ = two_shards

    def windows(seed):
        return stream(ShardLoader(pattern, batch_size=2, block_size=8, seed=seed), 30)

    assert torch.equal(windows(1), windows(1)) and not torch.equal(windows(1), windows(2))
    assert not torch.equal(windows(1)[:10], windows(None)[:10])  # the first epoch is shuffled too


@pytest.mark.parametrize('batch_size', [1, 3])  # 1: states at an epoch's very end; 3: batches across two epochs
def test_shuffled_resume_is_exact_at_every_step(two_shards, batch_size):
    pattern, _ = two_shards
    uninterrupted = stream(ShardLoader(pattern, batch_size, 8, seed=5), 40)
    loader = ShardLoader(pattern, batch_size, 8, seed=5)
    epochs = set()
    for step in range(30):
        state = pickle.loads(pickle.dumps(loader.state_dict()))
        epochs.add(state['epoch'])
        resumed = ShardLoader(pattern, batch_size, 8)  # the state, not this loader's seed, says how to go on
        resumed.load_state_dict(state)
        assert torch.equal(stream(resumed, 10), uninterrupted[step * batch_size : (step + 10) * batch_size])
        loader.next_batch()
    assert epochs >= {0, 1}


def test_a_state_from_before_shuffling_reads_on_in_order(two_shards):
    pattern, _ = two_shards
    old = ShardLoader(pattern, batch_size=2, block_size=8)
    stream(old, 7)
    resumed = ShardLoader(pattern, batch_size=2, block_size=8, seed=1)
    resumed.load_state_dict(old.state_dict())
    assert torch.equal(stream(resumed, 10), stream(old, 10))


def test_any_split_of_a_shuffled_step_reads_the_same_windows(tmp_path):
    for i, size in enumerate([200, 130, 170]):
        write_shard(str(tmp_path / f"d_train_{i:06d}.bin"), np.arange(size) + 1000 * i)
    pattern = str(tmp_path / 'd_train_*.bin')
    single = stream(ShardLoader(pattern, batch_size=4, block_size=5, seed=7), 30)  # about one epoch and a quarter
    micro_steps = stream(ShardLoader(pattern, batch_size=2, block_size=5, seed=7), 60)
    ranks = [ShardLoader(pattern, batch_size=2, block_size=5, rank=r, world_size=2, seed=7) for r in range(2)]
    steps = torch.cat([torch.cat([stream(loader, 1) for loader in ranks]) for _ in range(30)])
    assert torch.equal(single, micro_steps) and torch.equal(single, steps)
    assert ranks[0].state_dict() == ranks[1].state_dict() and ranks[0].state_dict()['epoch'] == 1


def test_a_loader_keeps_at_most_max_open_shards_open(tmp_path, monkeypatch):
    for i in range(4):
        write_shard(str(tmp_path / f"d_train_{i:06d}.bin"), np.arange(60) + 1000 * i)
    pattern = str(tmp_path / 'd_train_*.bin')
    all_open = ShardLoader(pattern, batch_size=3, block_size=5, seed=2)
    expected = stream(all_open, 20)
    monkeypatch.setattr(shards, 'MAX_OPEN_SHARDS', 2)  # read when a shard opens
    two_open = ShardLoader(pattern, batch_size=3, block_size=5, seed=2)
    assert torch.equal(stream(two_open, 20), expected)
    assert len(two_open.opened) == 2 and len(all_open.opened) == 4


# -----------------------------------------------------------------------------
# datasets, meta.json and tokenizers

def test_write_dataset_shards_evenly_and_drops_stale_shards(tmp_path):
    meta = {'tokenizer': 'bytes', 'vocab_size': 256, 'source': 'test'}
    train, val = np.arange(1000) % 256, np.arange(50)
    paths = write_dataset(str(tmp_path), 'd', train, val, meta, shard_tokens=300)
    assert [os.path.basename(p) for p in paths] == [
        'd_train_000000.bin', 'd_train_000001.bin', 'd_train_000002.bin', 'd_train_000003.bin',
        'd_val_000000.bin', 'meta.json']
    assert [len(read_shard(p)) for p in paths[:4]] == [250, 250, 250, 250]
    np.testing.assert_array_equal(np.concatenate([read_shard(p) for p in paths[:4]]), train)
    assert read_meta(str(tmp_path)) == meta
    write_dataset(str(tmp_path), 'd', train, val, meta, shard_tokens=600)
    assert sorted(os.listdir(tmp_path)) == ['d_train_000000.bin', 'd_train_000001.bin', 'd_val_000000.bin',
                                            'meta.json']


def test_write_dataset_rejects_ids_beyond_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size 256"):
        write_dataset(str(tmp_path), 'd', [1, 300], [1, 2], {'tokenizer': 'bytes', 'vocab_size': 256})


def test_read_meta_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="python data/fresh/prepare.py"):
        read_meta(str(tmp_path / 'fresh'))
    (tmp_path / 'meta.json').write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_meta(str(tmp_path))


@pytest.mark.parametrize("meta, complaint", [
    ({'tokenizer': 'sentencepiece', 'vocab_size': 5}, "tokenizer must be"),
    ({'tokenizer': 'bytes', 'vocab_size': 300}, "vocab_size 256"),
    ({'tokenizer': 'char', 'vocab_size': 3, 'chars': 'aab'}, 'distinct'),
    ({'tokenizer': 'char', 'vocab_size': 3, 'chars': 'abc', 'eot': 3}, 'eot'),
    ({'tokenizer': 'gpt2', 'vocab_size': '50257'}, "positive integer"),
])
def test_bad_meta_is_refused(meta, complaint):
    with pytest.raises(ValueError, match=complaint):
        get_tokenizer(meta)


def test_byte_and_char_tokenizers_round_trip():
    encode, decode = get_tokenizer({'tokenizer': 'bytes', 'vocab_size': 256})
    assert encode('né') == [110, 195, 169] and decode(encode("naïve ü\n")) == "naïve ü\n"
    encode, decode = get_tokenizer({'tokenizer': 'char', 'vocab_size': 4, 'chars': " abc"})
    assert encode("cab a") == [3, 1, 2, 0, 1] and decode(encode("cab a")) == "cab a"
    with pytest.raises(ValueError, match=r"\['z'\]"):
        encode('abz')


def test_split_documents_is_even_and_keeps_every_document():
    docs = [f"doc{i}" for i in range(85)]
    train, val, test = shards.split_documents(docs, 0.05)  # every 20th, alternately to val and to test
    assert val == ['doc19', 'doc59'] and test == ['doc39', 'doc79'] and sorted(train + val + test) == sorted(docs)
    # too few for two crossings: the last documents are held out, so that val and test each get one
    assert shards.split_documents(['a', 'b', 'c'], 0.05) == (['a'], ['c'], ['b'])
    assert shards.split_documents(['a', 'b', 'c', 'd'], 0.3) == (['a', 'b'], ['d'], ['c'])
    with pytest.raises(ValueError, match="at least 3 documents"):
        shards.split_documents(['one', 'two'], 0.1)


# -----------------------------------------------------------------------------
# the prepare scripts, on local input

def split_at(tokens, eot):
    """The documents of a token array in which each document starts with eot."""
    tokens = np.asarray(tokens).tolist()
    starts = [i for i, t in enumerate(tokens) if t == eot] + [len(tokens)]
    assert starts[0] == 0
    return [tokens[a + 1 : b] for a, b in zip(starts, starts[1:])]


def test_prepare_stdlib(tmp_path):
    with pytest.raises(SystemExit, match=r"at least 3 documents.*raise --max_mb"):  # one file: no val and test
        stdlib.main(['--max_mb', '0.00001', '--out_dir', str(tmp_path)])
    paths = stdlib.main(['--max_mb', '0.3', '--out_dir', str(tmp_path)])
    assert [os.path.basename(p) for p in paths] == ['stdlib_train_000000.bin', 'stdlib_val_000000.bin',
                                                    'stdlib_test_000000.bin', 'meta.json']
    meta = read_meta(str(tmp_path))
    assert meta['tokenizer'] == 'bytes' and meta['vocab_size'] == 256 and meta['eot'] == 0
    _, decode = get_tokenizer(meta)
    train, val, test = (read_shard(path) for path in paths[:3])
    assert 0.3e6 <= len(train) + len(val) + len(test) < 1.0e6
    train_docs, val_docs, test_docs = (split_at(split, meta['eot']) for split in (train, val, test))
    held = len(val_docs) + len(test_docs)
    assert held == max(2, (len(train_docs) + held) // 20)  # every 20th file, and at least one each
    assert len(val_docs) - len(test_docs) in (0, 1)
    assert not {tuple(d) for d in val_docs} & {tuple(d) for d in test_docs}  # files of their own
    for doc in val_docs + test_docs:
        ast.parse(decode(doc))  # each document is one whole Python source file
    loader = ShardLoader(str(tmp_path / 'stdlib_val_*.bin'), 4, 64, vocab_size=256)
    assert loader.next_batch()[0].shape == (4, 64)


def test_prepare_runs_as_a_script(tmp_path):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'stdlib', 'prepare.py')
    out = tmp_path / 'out'
    # from another folder: the script must find `data.shards` on its own
    result = subprocess.run([sys.executable, script, '--max_mb', '0.05', '--out_dir', str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'train:' in result.stdout and read_meta(str(out))['tokenizer'] == 'bytes'


@needs_shakespeare
def test_prepare_shakespeare_char(tmp_path):
    paths = shakespeare_char.main(['--input', SHAKESPEARE, '--out_dir', str(tmp_path)])
    meta = read_meta(str(tmp_path))
    assert meta['tokenizer'] == 'char' and meta['vocab_size'] == 65
    train, val, test = (read_shard(path) for path in paths[:3])
    text_ = open(SHAKESPEARE, encoding='utf-8').read()
    assert len(train) == int(0.9 * len(text_)) and len(train) + len(val) == int(0.95 * len(text_))
    assert len(train) + len(val) + len(test) == len(text_) == 1_115_394
    _, decode = get_tokenizer(meta)
    assert decode(train.tolist()) + decode(val.tolist()) + decode(test.tolist()) == text_
    assert not os.path.exists(tmp_path / 'input.txt')  # --input given: nothing downloaded


@needs_shakespeare
def test_prepare_shakespeare_gpt2(tmp_path, gpt2):
    paths = shakespeare.main(['--input', SHAKESPEARE, '--out_dir', str(tmp_path)])
    meta = read_meta(str(tmp_path))
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot']) == ('gpt2', 50257, 50256)
    train, val, test = (read_shard(path) for path in paths[:3])
    assert train.dtype == np.uint16 and abs(len(train) + len(val) + len(test) - 338_025) < 5  # a BPE cut or two
    _, decode = gpt2
    text_ = decode(train.tolist()) + decode(val.tolist()) + decode(test.tolist())
    assert text_ == open(SHAKESPEARE, encoding='utf-8').read()


def test_prepare_offline_says_in_one_line_how_to_go_on(tmp_path, monkeypatch):
    # no network: the download is refused at once (nothing listens on port 9 here)
    monkeypatch.setattr(shakespeare_char, 'URL', 'http://127.0.0.1:9/input.txt')
    with pytest.raises(SystemExit) as e:
        shakespeare_char.main(['--out_dir', str(tmp_path)])
    message = str(e.value.code)
    assert "could not download" in message and "--input FILE" in message and "\n" not in message
    assert 'resumes' not in message and not os.path.exists(tmp_path / 'input.txt.part')  # nothing to resume

    # no cached gpt2 encoding, and no network to fetch it
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, 'get_encoding', offline)
    with pytest.raises(SystemExit) as e:
        shakespeare.main(['--input', __file__, '--out_dir', str(tmp_path)])
    message = str(e.value.code)
    assert 'TIKTOKEN_CACHE_DIR' in message and 'ConnectionError' in message and "\n" not in message


def test_prepare_text(tmp_path, gpt2):
    inputs = tmp_path / 'in'
    (inputs / 'sub').mkdir(parents=True)
    docs = {
        'a.txt': "First document.\n",
        'b.md': "Zweites Dokument: naïve café, 東京\r\nwith a Windows line end.",
        'sub/c.txt': "A literal <|endoftext|> here is plain text, not a separator.",
        'sub/d.txt': '',
        'e.log': "the last one " * 50,
    }
    for name, content in docs.items():
        (inputs / name).write_bytes(content.encode('utf-8'))
    (inputs / 'sub' / '.hidden').write_text("never read")
    out = tmp_path / 'out'
    argv = ['--input', str(inputs / 'sub'), str(inputs / '*.txt'), str(inputs / 'b.md'), str(inputs / 'e.log'),
            '--val_fraction', '0.2', '--processes', '2', '--out_dir', str(out)]
    paths = text.main(argv)
    _, decode = gpt2
    decoded = [decode(doc) for path in paths[:-1] for doc in split_at(read_shard(path), 50256)]
    assert sorted(decoded) == sorted(docs.values())
    # val, then test: 20 % of 5 files each, by document (the 2 of 5 that 2 x 0.2 holds out, alternately)
    assert [len(split_at(read_shard(path), 50256)) for path in paths[-3:-1]] == [1, 1]
    assert [os.path.basename(path).split('_')[1] for path in paths[:-1]] == ['train', 'val', 'test']
    # the same input gives the same bytes again
    before = [open(p, 'rb').read() for p in paths]
    assert [open(p, 'rb').read() for p in text.main(argv)] == before


def test_prepare_text_bad_input(tmp_path):
    with pytest.raises(SystemExit, match='nothing-here'):
        text.main(['--input', str(tmp_path / 'nothing-here*'), '--out_dir', str(tmp_path)])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match="need at least 3 documents"):
        text.main(['--input', str(tmp_path / 'empty'), '--out_dir', str(tmp_path / 'out')])
    with pytest.raises(SystemExit):  # val and as many again for test: half the files at most
        text.main(['--input', str(tmp_path / 'empty'), '--val_fraction', '0.5', '--out_dir', str(tmp_path / 'out')])
    (tmp_path / 'latin1.txt').write_bytes("caf\xe9".encode('latin-1'))
    (tmp_path / 'ok.txt').write_text('fine')
    # as a user runs it: one line on stderr, no traceback
    script = os.path.join(os.path.dirname(os.path.abspath(text.__file__)), 'prepare.py')
    done = subprocess.run([sys.executable, script, '--input', str(tmp_path), '--out_dir', str(tmp_path / 'out')],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and 'latin1.txt is not UTF-8' in done.stderr
    assert done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr


# -----------------------------------------------------------------------------
# fineweb, from a local HTTP server

class ShardServer(BaseHTTPRequestHandler):
    """Serves server.files {name: bytes}, honouring `Range: bytes=N-` unless server.ignore_range is set."""

    def do_GET(self):
        data = self.server.files.get(self.path.lstrip('/'))
        if data is None:
            self.send_error(404)
            return
        asked = self.headers.get('Range')
        self.server.requests.append((self.path.lstrip('/'), asked))
        start = int(asked[len('bytes='):-1]) if asked and not self.server.ignore_range else 0
        if start >= len(data):
            self.send_response(416)
            self.send_header('Content-Range', f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header('Content-Range', f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header('Content-Length', str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass  # keep the test output quiet


@pytest.fixture
def fineweb_server(tmp_path):
    """A local server with a val shard, two train shards and the last train shard (the test split here) in the
    FineWeb layout."""
    files = {}
    for i, (name, _) in enumerate(fineweb.shard_names(2)):
        write_shard(str(tmp_path / name), np.arange(3000) * (i + 1) % 50257)
        files[name] = (tmp_path / name).read_bytes()
    server = ThreadingHTTPServer(('127.0.0.1', 0), ShardServer)
    server.files, server.requests, server.ignore_range = files, [], False
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def run_fineweb(url, out_dir):
    return fineweb.main(['--num_shards', '2', '--base_url', url, '--out_dir', str(out_dir)])


def test_fineweb_fresh_download(fineweb_server, tmp_path, capsys):
    server, url = fineweb_server
    out = tmp_path / 'out'
    paths = run_fineweb(url, out)
    here = {'fineweb_train_000103.bin': 'fineweb_test_000103.bin'}  # the last published train shard: test
    assert sorted(os.listdir(out)) == sorted([here.get(name, name) for name in server.files] + ['meta.json'])
    for name, data in server.files.items():
        assert (out / here.get(name, name)).read_bytes() == data
    assert read_meta(str(out))['tokenizer'] == 'gpt2' and paths[-1] == str(out / 'meta.json')
    assert server.requests == [(name, None) for name, _ in fineweb.shard_names(2)]
    assert [ShardLoader(str(out / f'fineweb_{split}_*.bin'), 2, 8).sizes.tolist() for split in ('val', 'test')] \
        == [[3000], [3000]]  # the held-out splits train.py reads (eval_split val or test)
    run_fineweb(url, out)  # everything is complete: no request at all
    assert len(server.requests) == 4
    with pytest.raises(SystemExit):
        fineweb.main(['--num_shards', '103', '--base_url', url, '--out_dir', str(out)])
    assert '--num_shards must be in 1..102' in capsys.readouterr().err  # the 103rd is test


@pytest.mark.parametrize('ignore_range', [False, True])
def test_fineweb_resumes_a_partial_download(fineweb_server, tmp_path, ignore_range):
    server, url = fineweb_server
    server.ignore_range = ignore_range  # a server that ignores Range sends the whole file: start over
    out = tmp_path / 'out'
    out.mkdir()
    name = 'fineweb_train_000001.bin'
    (out / (name + '.part')).write_bytes(server.files[name][:1500])
    run_fineweb(url, out)
    assert (name, 'bytes=1500-') in server.requests
    assert (out / name).read_bytes() == server.files[name]
    assert not any(f.endswith('.part') for f in os.listdir(out))


def test_fineweb_redownloads_a_part_that_is_already_whole(fineweb_server, tmp_path):
    server, url = fineweb_server
    out = tmp_path / 'out'
    out.mkdir()
    name = 'fineweb_val_000000.bin'
    (out / (name + '.part')).write_bytes(server.files[name])  # finished, but never renamed
    run_fineweb(url, out)
    assert [r for r in server.requests if r[0] == name] == [(name, f"bytes={len(server.files[name])}-"), (name, None)]
    assert (out / name).read_bytes() == server.files[name]


def test_fineweb_rejects_and_removes_a_bad_file(fineweb_server, tmp_path):
    server, url = fineweb_server
    server.files['fineweb_train_000002.bin'] = b"<html>not a shard</html>" * 100
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match="fineweb_train_000002.bin is not a token shard"):
        run_fineweb(url, out)
    assert not (out / 'fineweb_train_000002.bin').exists() and not (out / 'meta.json').exists()
