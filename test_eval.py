"""
Tests for eval.py, the multiple-choice scoring of data/tasks.py, and train.py's task_interval hook. All on
the CPU, with models small enough to run in a blink:

    python -m pytest -q test_eval.py

The end-to-end checks use a model whose every next-token distribution is one fixed, hand-set distribution
over bytes, so that the right answers (by summed and by mean loss) can be worked out by hand.
"""
import functools
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import asdict
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

import eval as evaluation  # eval.py; `eval` itself is a builtin
import train
from checkpoint import atomic_save
from data import tasks
from data.shards import get_tokenizer, write_dataset
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))
BYTES = {'tokenizer': 'bytes', 'vocab_size': 256}
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

# The hand-set model's next-byte logits: 'a' 10, 'b' 7, every other byte 0. Its losses per byte are then
# a 0.06, b 3.06, any other 10.06 (log(e^10 + e^7 + 254) = 10.0596), whatever the context.
# Each item: (context, choices, label, right by summed loss, right by mean loss per token).
ITEMS = [
    ('q:', ['a', 'z'], 0, True, True),
    ('q:', ['bbbb', 'z'], 0, False, True),  # sum: bbbb 12.2 > z 10.1; mean: bbbb 3.06 < z 10.1
    ('q:', ['bbbb', 'z'], 1, True, False),
    ('q:', ['z', 'a', 'b'], 2, False, False),  # a wins both ways
    ('q:', ['zzz', 'ab'], 1, True, True),
    ('q:', ['bbbb', 'z'], 0, False, True),
    ('q:', ['a', 'b'], 0, True, True),
]
ACC = sum(item[3] for item in ITEMS) / len(ITEMS)  # 4/7
ACC_NORM = sum(item[4] for item in ITEMS) / len(ITEMS)  # 5/7


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


def write_jsonl(path, records):
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return str(path)


def save(model, out_dir, step=7):
    """out_dir/ckpt.pt as train.py writes it, as far as load_checkpoint reads it."""
    os.makedirs(out_dir, exist_ok=True)
    atomic_save({'model': model.state_dict(), 'config': asdict(model.config), 'meta': BYTES, 'step': step},
                os.path.join(out_dir, 'ckpt.pt'))
    return str(out_dir)


def tiny_gpt(block_size=32, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=block_size, vocab_size=256, n_layer=2, n_head=2, n_embd=16, ffn_hidden=32,
                    activation='polynorm')
    return GPT(cfg).eval()


def unigram_gpt():
    """A GPT whose logits are the hand-set ones at every position: every token embeds as the same vector,
    attention and FFN add nothing to it, and the output head maps it to the logits."""
    model = tiny_gpt()
    logits = torch.zeros(256)
    logits[ord('a')], logits[ord('b')] = 10.0, 7.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('attn.proj.weight', 'ffn.down.weight')):
                p.zero_()
        model.wte.weight.zero_()
        model.wte.weight[:, 0] = 1.0
        normed = model.norm_f(model.wte.weight[:1])[0, 0]  # what the final norm makes of that vector
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits / normed
    return model


@pytest.fixture(scope='module')
def unigram_run(tmp_path_factory):
    """A checkpoint of the hand-set model and the generic task file of ITEMS."""
    path = tmp_path_factory.mktemp('unigram')
    items = write_jsonl(path / 'seven.jsonl', [{'context': c, 'choices': ch, 'label': l} for c, ch, l, _, _ in ITEMS])
    return save(unigram_gpt(), path / 'out'), items


def read_records(out_dir, name='eval.jsonl'):
    with open(os.path.join(out_dir, name)) as f:
        return [json.loads(line) for line in f]


def reference_loss(model, tokens, n):
    """One row alone, unpadded: the summed cross-entropy of its last n tokens, from log_softmax."""
    x, y = torch.tensor(tokens[:-1])[None], torch.tensor(tokens[1:])[None]  # (1, T)
    with torch.no_grad():
        logits, _ = model(x, y)
    logp = torch.log_softmax(logits[0].float(), dim=-1)  # (T, V)
    T = len(tokens) - 1
    return -sum(logp[t, y[0, t]] for t in range(T - n, T)).item()


# -----------------------------------------------------------------------------
# the scores, end to end through eval.py


def test_hand_set_model_gets_the_hand_worked_accuracies(unigram_run, capsys):
    out, items = unigram_run
    losses = tasks.choice_losses(unigram_gpt(), [(list(b'q:a'), 1), (list(b'q:b'), 1), (list(b'q:z'), 1)])
    assert losses.tolist() == pytest.approx([0.0596, 3.0596, 10.0596], abs=1e-4)  # the model is what ITEMS assume
    evaluation.main([f'--out_dir={out}', '--task=mc', f'--input={items}', '--batch_size=3'])
    record = read_records(out)[-1]
    assert record['task'] == 'seven' and record['step'] == 7 and record['n'] == 7 and record['processes'] == 1
    assert record['acc'] == ACC and record['acc_norm'] == ACC_NORM  # 4/7 and 5/7, exactly
    assert record['acc_ci95'] == pytest.approx(1.96 * (ACC * (1 - ACC) / 7) ** 0.5)
    printed = capsys.readouterr()
    assert f"{ACC:.4f} ± {record['acc_ci95']:.4f}" in printed.out and '7 / 7 items' in printed.err
    assert 'acc ± 95 % interval' in printed.out  # not lm-eval's ± of one standard error


def test_results_are_appended_never_overwritten(unigram_run, tmp_path):
    out, items = unigram_run
    log = os.path.join(out, 'eval.jsonl')
    before = open(log).read() if os.path.exists(log) else ''
    evaluation.main([f'--out_dir={out}', f'--task={items}', '--limit=2'])  # a path names a generic file too
    evaluation.main([f'--out_dir={out}', '--task=mc', f'--input={items}', '--limit=3', '--batch_size=1'])
    assert open(log).read().startswith(before)
    records = read_records(out)
    assert len(records) == before.count('\n') + 2 and [r['n'] for r in records[-2:]] == [2, 3]
    assert (records[-2]['acc'], records[-2]['acc_norm']) == (1 / 2, 1.0)  # ITEMS[:2]
    assert (records[-1]['acc'], records[-1]['acc_norm']) == (2 / 3, 2 / 3)  # ITEMS[:3]


def test_two_gloo_processes_count_as_one(unigram_run, tmp_path):
    out, items = unigram_run
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'eval.py',
           f'--out_dir={out}', '--task=mc', f'--input={items}', '--batch_size=3', '--device=cpu']
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = read_records(out)[-1]
    # 7 items, 3 per pass: one process scores 3 + 1, the other 3 and makes its second pass with a stand-in row
    assert record['processes'] == 2 and record['n'] == 7
    assert record['acc'] == ACC and record['acc_norm'] == ACC_NORM


# -----------------------------------------------------------------------------
# the scorer


def random_items(n, seed=0):
    """Items of assorted lengths and choice counts, in printable bytes."""
    rng = np.random.default_rng(seed)
    text = lambda k: ''.join(chr(c) for c in rng.integers(32, 127, k))  # noqa: E731
    return [{'context': text(rng.integers(1, 20)), 'label': 0,
             'choices': [text(rng.integers(1, 8)) for _ in range(rng.integers(2, 5))]} for _ in range(n)]


def test_batched_scorer_equals_one_row_at_a_time():
    model = tiny_gpt()
    encode, _ = get_tokenizer(BYTES)
    rows = [row for item in random_items(9) for row in tasks.encode_item(item, encode, 32)[0]]
    batched = tasks.choice_losses(model, rows)
    alone = [reference_loss(model, tokens, n) for tokens, n in rows]
    assert batched.tolist() == pytest.approx(alone, rel=1e-5, abs=1e-5)
    # and the counts do not depend on how many items share a pass
    task = {'name': 'random', 'items': [tasks.encode_item(item, encode, 32) for item in random_items(9)]}
    one, five = tasks.evaluate_task(model, task, 1), tasks.evaluate_task(model, task, 5)
    assert one == five and one['n'] == 9


def test_context_is_cut_from_the_left_to_fit_block_size():
    model, encode = tiny_gpt(block_size=16), get_tokenizer(BYTES)[0]
    context = 'the quick brown fox jumps over the lazy dog'
    item = {'context': context, 'choices': ['xyz', 'w'], 'label': 0}
    rows, _ = tasks.encode_item(item, encode, 16)
    assert rows == [(list((context + 'xyz').encode())[-17:], 3), (list((context + 'w').encode())[-17:], 1)]
    loss = tasks.choice_losses(model, rows)[0].item()  # the model itself refuses more than 16 positions
    # the same as the item with its context cut by hand to the 14 tokens that fit, and not to one fewer
    # (a random tiny model barely feels its 14th token back, so the two differ by about 1e-4: hence 1e-6)
    assert loss == pytest.approx(reference_loss(model, list((context[-14:] + 'xyz').encode()), 3), abs=1e-6)
    assert loss != pytest.approx(reference_loss(model, list((context[-13:] + 'xyz').encode()), 3), abs=1e-6)
    # a 16-token choice keeps one token of context; a 17-token one cannot fit
    assert tasks.encode_item({**item, 'choices': ['x' * 16, 'y']}, encode, 16)[0][0] == (list(b'g' + b'x' * 16), 16)
    with pytest.raises(ValueError, match="choice 0 is 17 tokens, which leaves no room .* block_size=16"):
        tasks.encode_item({**item, 'choices': ['x' * 17, 'y']}, encode, 16)


# -----------------------------------------------------------------------------
# HellaSwag: the converter and the download

# Hand-written records in the published format of hellaswag_val.jsonl (its fields; made-up content).
HELLASWAG = [
    {'ind': 4, 'activity_label': 'Baking bread', 'ctx_a': 'A man kneads dough on a table.',
     'ctx_b': 'he', 'ctx': 'A man kneads dough on a table. he', 'split': 'val', 'split_type': 'indomain',
     'label': 2, 'endings': ['flies the dough.', 'eats the table.', 'shapes it into a loaf.', 'sings.'],
     'source_id': 'made-up~1'},
    {'ind': 9, 'activity_label': 'Swimming', 'ctx_a': 'A girl stands at the edge of a pool.',
     'ctx_b': 'she', 'ctx': 'A girl stands at the edge of a pool. she', 'split': 'val', 'split_type': 'zeroshot',
     'label': 0, 'endings': ['dives in.', 'reads the pool.', 'folds the water.', 'paints the sky.'],
     'source_id': 'made-up~2'},
    {'ind': 17, 'activity_label': 'Gardening', 'ctx_a': 'Two people dig holes in a yard.',
     'ctx_b': 'they', 'ctx': 'Two people dig holes in a yard. they', 'split': 'val', 'split_type': 'indomain',
     'label': 3, 'endings': ['fly away.', 'melt.', 'bake the holes.', 'plant small trees in them.'],
     'source_id': 'made-up~3'},
]


def test_hellaswag_converter(tmp_path):
    items = tasks.read_items(write_jsonl(tmp_path / 'hs.jsonl', HELLASWAG), tasks.hellaswag_item)
    assert items[0] == {'context': 'A man kneads dough on a table. he', 'label': 2,
                        'choices': [' flies the dough.', ' eats the table.', ' shapes it into a loaf.', ' sings.']}
    assert [item['label'] for item in items] == [2, 0, 3] and all(len(item['choices']) == 4 for item in items)
    task = tasks.load_task('hellaswag', BYTES, 64, write_jsonl(tmp_path / 'hs2.jsonl', HELLASWAG), limit=2)
    rows, label = task['items'][1]
    assert task['name'] == 'hellaswag' and len(task['items']) == 2 and label == 0
    assert rows[0] == (list(b'A girl stands at the edge of a pool. she dives in.'), len(b' dives in.'))
    bad = [{**HELLASWAG[0]}, {k: v for k, v in HELLASWAG[1].items() if k != 'endings'}]
    with pytest.raises(ValueError, match="line 2: missing 'endings'"):
        tasks.read_items(write_jsonl(tmp_path / 'bad.jsonl', bad), tasks.hellaswag_item)


@pytest.fixture
def hellaswag_server(tmp_path, monkeypatch):
    """A local server with the hand-written file, where data/tasks.py looks for HellaSwag, and a download
    folder of its own."""
    served = tmp_path / 'served'
    served.mkdir()
    write_jsonl(served / 'hellaswag_val.jsonl', HELLASWAG)
    requests = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)  # logged once per request: count them, print nothing

    server = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(tasks, 'HELLASWAG_URL', f'http://127.0.0.1:{server.server_address[1]}/hellaswag_val.jsonl')
    monkeypatch.setattr(tasks, 'HELLASWAG_PATH', str(tmp_path / 'data' / 'hellaswag' / 'hellaswag_val.jsonl'))
    yield requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_hellaswag_downloads_once_with_progress(hellaswag_server, tmp_path, capsys):
    out = save(unigram_gpt(), tmp_path / 'out')
    evaluation.main([f'--out_dir={out}'])
    with open(tasks.HELLASWAG_PATH) as f:
        assert [json.loads(line) for line in f] == HELLASWAG
    assert 'hellaswag_val.jsonl: ' in capsys.readouterr().err  # the download's progress line
    evaluation.main([f'--out_dir={out}', '--batch_size=2'])
    assert len(hellaswag_server) == 1  # the second run read the downloaded file
    records = read_records(out)
    assert [r['task'] for r in records] == ['hellaswag'] * 2 and records[0]['n'] == 3
    assert records[0]['acc'] == records[1]['acc'] and records[0]['file'] == tasks.HELLASWAG_PATH


def test_hellaswag_offline_says_to_use_input(unigram_run, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(tasks, 'HELLASWAG_URL', f'http://127.0.0.1:{port}/hellaswag_val.jsonl')
    monkeypatch.setattr(tasks, 'HELLASWAG_PATH', str(tmp_path / 'hellaswag' / 'hellaswag_val.jsonl'))
    with pytest.raises(SystemExit) as error:
        evaluation.main([f'--out_dir={unigram_run[0]}'])
    message = str(error.value)
    assert message.startswith("could not download http://127.0.0.1:") and 'ConnectionError' in message
    assert '; offline, fetch http://127.0.0.1:' in message
    assert "give it to eval.py with --input=FILE" in message and '\n' not in message
    offline = write_jsonl(tmp_path / 'copy.jsonl', HELLASWAG)  # and with --input it needs no download
    evaluation.main([f'--out_dir={unigram_run[0]}', f'--input={offline}'])
    assert read_records(unigram_run[0])[-1]['file'] == offline


# -----------------------------------------------------------------------------
# bad input: one line each


def good(**change):
    return {'context': 'q:', 'choices': ['a', 'b'], 'label': 0, **change}


@pytest.mark.parametrize('lines, message', [
    ([json.dumps(good()), '{"context": "q:", "choices": ["a", "b"], '], "bad.jsonl, line 2: not valid JSON"),
    ([json.dumps(good(label=2))], "line 1: label 2 is out of range: it must be an integer in 0..1"),
    ([json.dumps(good(label=True))], "line 1: label True is out of range"),
    ([json.dumps(good()), '', json.dumps({'context': 'q:', 'choices': ['a', 'b']})], "line 3: missing 'label'"),
    ([json.dumps(good(choices=['a']))], "line 1: 'choices' must be a list of at least 2 non-empty strings"),
    ([json.dumps(good(context=''))], "line 1: 'context' must be a non-empty string"),
    ([json.dumps(good(choices=['a', 'b' * 40]))], "bad.jsonl, item 1: choice 1 is 40 tokens, which leaves no room"),
    ([], "bad.jsonl holds no items"),
])
def test_bad_task_file_says_where(unigram_run, tmp_path, lines, message):
    path = tmp_path / 'bad.jsonl'
    path.write_text(''.join(line + '\n' for line in lines))
    with pytest.raises(SystemExit) as error:
        evaluation.main([f'--out_dir={unigram_run[0]}', '--task=mc', f'--input={path}'])
    assert message in str(error.value) and '\n' not in str(error.value)


@pytest.mark.parametrize('args, message', [
    (['--input=nowhere.jsonl'], "--input=nowhere.jsonl: no such file"),
    (['--task=mc'], "give eval.py --input=FILE"),
    (['--task=nowhere.jsonl'], "no task file nowhere.jsonl"),
    (['--task=x.jsonl', f'--input={__file__}'], "two task files, x.jsonl and"),
    (['--limit=0'], "--limit must be at least 1"),
])
def test_bad_arguments_say_what_to_do(unigram_run, args, message, capsys):
    with pytest.raises(SystemExit) as error:
        evaluation.main([f'--out_dir={unigram_run[0]}', *args])
    assert message in str(error.value) + capsys.readouterr().err


def test_no_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint in .*; train one with python train.py"):
        evaluation.main([f'--out_dir={tmp_path}', f'--task={write_jsonl(tmp_path / "a.jsonl", [good()])}'])


# -----------------------------------------------------------------------------
# training scores the task as it goes


def test_train_logs_the_task_records(tmp_path, unigram_run):
    tokens = np.frombuffer(b'q:a q:b ' * 400, dtype=np.uint8)
    write_dataset(str(tmp_path / 'data'), 'tiny', tokens[:2800], tokens[2800:], BYTES)
    args = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--ffn_hidden=32', '--block_size=16', '--micro_batch_size=2',
            '--tokens_per_step=32', '--max_steps=4', '--warmup_steps=1', '--log_interval=100', '--eval_interval=100',
            '--ckpt_interval=100', '--device=cpu', f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "out"}',
            '--task_interval=2', f'--task={unigram_run[1]}', '--task_limit=5']
    train.main(args)
    records = [r for r in read_records(tmp_path / 'out', 'log.jsonl') if 'eval_task' in r]
    assert [r['step'] for r in records] == [2, 4] and records[1]['tokens'] == 4 * 32
    assert all(set(r) == {'step', 'tokens', 'eval_task', 'acc', 'acc_norm', 'n'} for r in records)
    assert all(r['eval_task'] == 'seven' and r['n'] == 5 and 0 <= r['acc_norm'] <= 1 for r in records)
    with pytest.raises(SystemExit, match="task='nowhere.jsonl': no task file nowhere.jsonl"):
        train.main([*args, '--task=nowhere.jsonl', '--max_steps=1', '--overwrite=True'])
