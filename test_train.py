"""
Tests for train.py and sample.py: tiny models, a few dozen steps, all on the CPU.

    python -m pytest -q test_train.py

The distributed tests start 2 processes with torchrun over gloo, as a GPU cluster would with NCCL.
"""
import gc
import glob
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

import checkpoint
import common
import sample
import settings
import train
from data.shards import write_dataset, write_shard
from model import GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))

# A 2-layer model on 32-token sequences. One process runs 2 micro-steps of 2 sequences per step; two
# processes run 1 micro-step each: the same 128 tokens per step, so the same losses.
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--ffn_hidden=64', '--block_size=32', '--micro_batch_size=2',
        '--tokens_per_step=128', '--learning_rate=1e-2', '--min_lr=1e-3', '--warmup_steps=5', '--max_steps=24',
        '--log_interval=1', '--eval_interval=8', '--eval_steps=2', '--ckpt_interval=100', '--device=cpu', '--threads=1']
STOP = 12  # where the interrupted runs stop
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}  # see one_thread


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A byte-level dataset made of this project's own model.py: real text, always there."""
    path = tmp_path_factory.mktemp('data')
    with open(os.path.join(ROOT, 'model.py'), 'rb') as f:
        tokens = np.frombuffer(f.read(), dtype=np.uint8)
    split = len(tokens) * 9 // 10
    write_dataset(str(path), 'tiny', tokens[:split], tokens[split:], {'tokenizer': 'bytes', 'vocab_size': 256})
    return str(path)


def run(out_dir, data_dir, *args):
    """train.py in this process, on the tiny model."""
    train.main([*TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args])
    return str(out_dir)


def torchrun(nproc, out_dir, data_dir, *args):
    """train.py in nproc processes over gloo."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', 'train.py',
           *TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return str(out_dir)


def read_log(out_dir, key='loss'):
    """{step: train loss} (or another field of the training records, key) and {step: val loss} from
    out_dir/log.jsonl."""
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        records = [json.loads(line) for line in f]
    return ({r['step']: r[key] for r in records if 'loss' in r},
            {r['step']: r['val_loss'] for r in records if 'val_loss' in r})


def weights(out_dir):
    return checkpoint.load_checkpoint(out_dir)['model'].state_dict()


def test_the_held_out_loader_spreads_an_evaluation_over_its_split(data_dir, tmp_path):
    cfg = types.SimpleNamespace(data_dir=data_dir, dataset='tiny', eval_split='val', eval_steps=2, seed=1,
                                micro_batch_size=2, block_size=32, tokens_per_step=128)
    _, held = train.make_loaders(cfg, {'vocab_size': 256}, 0, 1)
    assert held.spread == 2 * 2 and held.files[0].endswith('tiny_val_000000.bin')  # eval_steps x 2 micro-steps
    with pytest.raises(SystemExit, match=r"^eval_split='test': no test shards in .*run data/tiny/prepare.py again"):
        train.make_loaders(types.SimpleNamespace(**{**vars(cfg), 'eval_split': 'test'}), {'vocab_size': 256}, 0, 1)
    write_dataset(str(tmp_path), 'tiny', np.arange(3000) % 256, np.arange(300) % 256,
                  {'tokenizer': 'bytes', 'vocab_size': 256}, test_tokens=np.arange(400) % 256)
    test = types.SimpleNamespace(**{**vars(cfg), 'eval_split': 'test', 'data_dir': str(tmp_path)})
    assert train.make_loaders(test, {'vocab_size': 256}, 0, 1)[1].files[0].endswith('tiny_test_000000.bin')


@pytest.fixture(scope='module')
def baseline(tmp_path_factory, data_dir):
    """One uninterrupted single-process run of 24 steps: what the other runs must reproduce."""
    return run(tmp_path_factory.mktemp('baseline'), data_dir)


@pytest.fixture(scope='module')
def stopped(tmp_path_factory, data_dir):
    """The same run, stopped at step STOP by stop_step."""
    return run(tmp_path_factory.mktemp('stopped'), data_dir, f'--stop_step={STOP}')


@pytest.fixture(scope='module')
def ddp_stopped(tmp_path_factory, data_dir):
    """The stopped run on two processes (DDP)."""
    return torchrun(2, tmp_path_factory.mktemp('ddp_stopped'), data_dir, f'--stop_step={STOP}')


# -----------------------------------------------------------------------------
# training


def test_loss_falls_and_log_has_every_field(baseline):
    losses, val_losses = read_log(baseline)
    assert sorted(losses) == list(range(1, 25))
    assert sorted(val_losses) == [8, 16, 24]
    assert losses[1] > 5.0  # about ln(256) = 5.55 for an untrained byte model
    assert losses[24] < losses[1] - 1.5 and val_losses[24] < val_losses[8]
    with open(os.path.join(baseline, 'log.jsonl')) as f:
        first = json.loads(f.readline())
    assert set(first) == {'step', 'tokens', 'loss', 'lm', 'lb', 'z', 'lr', 'grad_norm', 'tok_per_s', 'mfu', 'dt_ms',
                          'train_time_s'}
    assert first['tokens'] == 128 and first['dt_ms'] > 0
    # the first step compiles and warms up: timed alone, left out of tokens/s, MFU and train_time_s
    assert first['tok_per_s'] is None and first['mfu'] is None and first['train_time_s'] == 0
    with open(os.path.join(baseline, 'log.jsonl')) as f:
        records = [r for r in map(json.loads, f) if 'val_loss' not in r]
    assert records[1]['tok_per_s'] > 0 and records[1]['mfu'] is None  # no peak FLOPs known for a CPU
    times = [r['train_time_s'] for r in records]
    assert all(0 < a < b for a, b in zip(times[1:], times[2:]))
    ckpt = torch.load(os.path.join(baseline, 'ckpt.pt'), weights_only=True)
    assert ckpt['step'] == 24 and ckpt['config']['vocab_size'] == 256 and ckpt['meta']['tokenizer'] == 'bytes'


def test_moe_run_logs_its_auxiliary_losses_and_mfu(tmp_path, data_dir, capsys):
    run(tmp_path, data_dir, '--n_experts=4', '--top_k=2', '--moe_ffn_hidden=32', '--max_steps=2', '--peak_flops=1e12')
    with open(tmp_path / 'log.jsonl') as f:
        record = [json.loads(line) for line in f][1]  # step 2: step 1 is timed alone, without tokens/s or MFU
    assert record['lb'] > 0 and record['z'] > 0
    assert record['loss'] == pytest.approx(record['lm'] + record['lb'] + record['z'])
    # MFU from a hand count of this model's training FLOPs per token: 6 per active non-embedding parameter
    # (per layer: attention, 2 norms, the router, 2 of the 4 experts' up and down, PolyNorm's 4; then the final
    # norm and the output head) plus the attention scores, 12 * n_layer * n_embd * seq_len
    flops = 6 * (2 * (4 * 32 * 32 + 2 * 32 + 32 * 4 + 2 * 2 * 32 * 32 + 4) + 32 + 256 * 32) + 12 * 2 * 32 * 32
    assert record['mfu'] == pytest.approx(flops * record['tok_per_s'] / 1e12, rel=1e-12)
    assert f"(lm {record['lm']:.4f} lb {record['lb']:.4f} z {record['z']:.4f})" in capsys.readouterr().out


def test_peak_flops_lookup_tells_gpu_variants_apart():
    assert common.peak_flops('NVIDIA H100 80GB HBM3') == common.peak_flops('NVIDIA H200') == 989e12
    assert common.peak_flops('NVIDIA H100 PCIe') < common.peak_flops('NVIDIA H100 80GB HBM3')
    assert common.peak_flops('NVIDIA A100-SXM4-80GB') == 312e12
    assert common.peak_flops('NVIDIA GeForce RTX 3090') is None  # unknown: MFU shows as n/a


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = train.SimpleNamespace(learning_rate=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    lrs = [train.lr_at(step, cfg) for step in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # never rises after warmup
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1)


def test_stop_and_resume_logs_the_same_losses_bit_for_bit(baseline, stopped, tmp_path, data_dir):
    out = shutil.copytree(stopped, tmp_path / 'resumed')
    assert max(read_log(out)[0]) == STOP
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['step'] == STOP
    run(out, data_dir, '--init_from=resume')
    assert read_log(out) == read_log(baseline)  # exact float equality, every step
    assert read_log(out, 'grad_norm') == read_log(baseline, 'grad_norm')
    resumed, uninterrupted = weights(out), weights(baseline)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_resume_drops_log_records_after_the_checkpoint(stopped, tmp_path, data_dir):
    out = shutil.copytree(stopped, tmp_path / 'resumed')
    before = log_lines(out)
    with open(os.path.join(out, 'log.jsonl'), 'a') as f:  # as if the run had gone on after its checkpoint, then died
        for step in (STOP + 1, STOP + 3):  # STOP + 3: a step the resumed run never logs again
            f.write(json.dumps({'step': step, 'tokens': 0, 'loss': 99.0}) + '\n')
    run(out, data_dir, '--init_from=resume', f'--stop_step={STOP + 1}')
    after = log_lines(out)
    assert after[:-1] == before and json.loads(after[-1])['step'] == STOP + 1  # the stale records gone, raw lines
    assert json.loads(after[-1])['loss'] != 99.0


def log_lines(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return f.read().splitlines()


def test_logged_loss_is_the_interval_mean_also_across_a_resume(baseline, tmp_path, data_dir):
    per_step = read_log(baseline)[0]  # log_interval=1: every step's own loss
    out = run(tmp_path, data_dir, '--log_interval=5', f'--stop_step={STOP}')  # stops inside the interval 11..15
    run(out, data_dir, '--log_interval=5', '--init_from=resume')
    losses = read_log(out)[0]
    assert sorted(losses) == [1, 5, 10, STOP, 15, 20, 24]  # step 1, every 5th, and the stop and last steps
    mean = lambda first, last: sum(per_step[s] for s in range(first, last + 1)) / (last - first + 1)
    assert losses[1] == per_step[1] and losses[5] == pytest.approx(mean(1, 5), rel=1e-12)
    assert losses[STOP] == pytest.approx(mean(11, STOP), rel=1e-12)
    assert losses[15] == pytest.approx(mean(11, 15), rel=1e-12)  # steps 11 and 12 ran before the resume
    assert losses[24] == pytest.approx(mean(21, 24), rel=1e-12)


def test_two_process_ddp_matches_one_process(baseline, stopped, ddp_stopped):
    (losses, val_losses), (expected, expected_val) = read_log(ddp_stopped), read_log(baseline)
    assert sorted(losses) == list(range(1, STOP + 1)) and sorted(val_losses) == [8]
    assert losses == pytest.approx({step: expected[step] for step in losses}, rel=1e-5)
    assert val_losses[8] == pytest.approx(expected_val[8], rel=1e-5)
    # the gradients' scale: averaged over the processes, not summed (Adam's update and the clipping hide most of
    # a factor 2 from the losses, the gradient norm shows it whole from step 1)
    norms, expected_norms = read_log(ddp_stopped, 'grad_norm')[0], read_log(baseline, 'grad_norm')[0]
    assert norms == pytest.approx({step: expected_norms[step] for step in norms}, rel=1e-6)
    # each process's micro-step is one of the single process's two: the same sums, so the same weights
    assert_same_weights(weights(ddp_stopped), weights(stopped), atol=1e-7)  # saved unwrapped: no 'module.'


def assert_same_weights(actual, expected, atol):
    assert list(actual) == list(expected)
    for k in expected:
        torch.testing.assert_close(actual[k], expected[k], rtol=0, atol=atol, msg=k)


def test_ddp_with_gradient_accumulation_matches_one_process(baseline, stopped, tmp_path, data_dir):
    # 2 processes x 2 micro-steps of 1 sequence: the no_sync() micro-steps, then the one that averages the
    # gradients over the processes; the same 128 tokens per step as the single process's 2 x 2 sequences
    out = torchrun(2, tmp_path / 'accumulated', data_dir, '--micro_batch_size=1', f'--stop_step={STOP}')
    (losses, _), expected = read_log(out), read_log(baseline)[0]
    assert sorted(losses) == list(range(1, STOP + 1))
    # float32 sums of 1-sequence micro-batches in another order: the weights equal to about 2e-6 after 12 steps,
    # the losses to about 1e-6, a gradient norm to 1e-4 at a spike
    assert losses == pytest.approx({step: expected[step] for step in losses}, rel=1e-4)
    norms, expected_norms = read_log(out, 'grad_norm')[0], read_log(baseline, 'grad_norm')[0]
    assert norms == pytest.approx({step: expected_norms[step] for step in norms}, rel=1e-3)
    assert_same_weights(weights(out), weights(stopped), atol=1e-5)


def test_fsdp_trains_saves_and_resumes_on_another_number_of_ranks(baseline, stopped, tmp_path, data_dir):
    out = torchrun(2, tmp_path / 'fsdp', data_dir, '--fsdp=True', f'--stop_step={STOP}')
    assert os.path.isdir(os.path.join(out, 'ckpt')) and not os.path.exists(os.path.join(out, 'ckpt.pt'))
    # the 2-rank shards, gathered whole in one process, hold the weights the single-process run had
    sharded, single = weights(out), weights(stopped)
    assert all(torch.allclose(sharded[k], single[k], atol=1e-5) for k in single)
    # a kill between the save's two renames: the previous checkpoint as ckpt.old/, the new one complete as
    # ckpt.tmp/, no ckpt/. Sampling reads the new one; resuming finishes the renames.
    ckpt = os.path.join(out, 'ckpt')
    shutil.copytree(ckpt, ckpt + '.old')
    os.rename(ckpt, ckpt + '.tmp')
    assert all(torch.equal(a, b) for a, b in zip(weights(out).values(), sharded.values()))
    torchrun(1, out, data_dir, '--fsdp=True', '--init_from=resume')  # optimizer state too, resharded to 1 rank
    assert sorted(f for f in os.listdir(out) if f.startswith('ckpt')) == ['ckpt']
    (losses, val_losses), (expected, expected_val) = read_log(out), read_log(baseline)
    # float32 sums in another order over 2 ranks' shards: equal to about 1e-5, not bit for bit
    assert losses == pytest.approx(expected, rel=1e-4)
    assert val_losses == pytest.approx(expected_val, rel=1e-4)


def test_ddp_moe_loop_with_experts_that_get_no_tokens(tmp_path, data_dir):
    # 64 experts, top-1, 64 tokens per micro-step: most experts get no tokens, and the loop over experts skips
    # them. Their weights are rows of one stacked parameter per layer, so no parameter is left without a
    # gradient and DDP needs no find_unused_parameters.
    flags = ['--n_experts=64', '--top_k=1', '--moe_ffn_hidden=8', '--moe_impl=loop']
    config = settings.resolve([*TINY, *flags, "--vocab_size=256"])[0]
    torch.manual_seed(config['seed'])
    model = train.GPT(common.model_config(config))
    x, y = train.ShardLoader(os.path.join(data_dir, '*_train_*.bin'), 2, 32, 0, 2).next_batch()  # rank 0's first
    routed = []
    for block in model.blocks:
        block.ffn.router.register_forward_hook(lambda module, args, logits: routed.append(logits.argmax(-1)))
    model(x, y)[1]['loss'].backward()
    assert all(len(set(experts.tolist())) < 40 for experts in routed)  # over 24 of 64 experts idle, each layer
    assert all(p.grad is not None for p in model.parameters())
    out = torchrun(2, tmp_path / 'moe', data_dir, *flags, '--max_steps=2')
    assert sorted(read_log(out)[0]) == [1, 2]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    # an absurd learning rate: the first update throws the weights to 1e30, the next forward overflows
    with pytest.raises(SystemExit, match=r"step 2: lm is nan; stopped before updating the weights"):
        run(tmp_path, data_dir, '--learning_rate=1e30', '--warmup_steps=0', '--ckpt_interval=1')
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] == 1
    assert all(torch.isfinite(w).all() for w in ckpt['model'].values())
    assert sorted(read_log(tmp_path)[0]) == [1]


def test_sigterm_finishes_the_step_saves_and_exits_cleanly(tmp_path, data_dir):
    cmd = [sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--max_steps=100000']
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log, deadline = tmp_path / 'log.jsonl', time.time() + 120
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    step = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['step']
    assert max(read_log(tmp_path)[0]) == step and 3 <= step < 100000
    assert f"stopped by a signal at step {step}" in output


def test_resume_restores_the_random_number_generators(tmp_path):
    # nothing in training draws random numbers today (no dropout); whatever draws tomorrow must continue the
    # same stream after a resume, so the restore itself is checked: the draws after a save come again after it
    config = {'n_layer': 1, 'n_head': 1, 'n_embd': 8, 'ffn_hidden': 16, 'block_size': 8, 'vocab_size': 16}
    model = train.GPT(GPTConfig(**config))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1]['loss'].backward()
    optimizer.step()  # an optimizer state to save
    torch.manual_seed(1)
    random.seed(1)
    checkpoint.save(str(tmp_path), False, model, optimizer, {'step': 1, 'config': config, 'meta': {}}, 0)
    expected = torch.rand(4), random.random()
    torch.manual_seed(2)
    random.seed(2)
    checkpoint.resume(str(tmp_path), False, model, optimizer, config)
    assert torch.equal(torch.rand(4), expected[0]) and random.random() == expected[1]
    # and the resumed run holds nothing in the checkpoint's memory map (read with mmap): a file rewritten in place
    # under a map kills the process that maps it with SIGBUS
    if os.path.exists('/proc/self/maps'):
        gc.collect()
        with open('/proc/self/maps') as f:
            assert str(tmp_path / 'ckpt.pt') not in f.read()


# -----------------------------------------------------------------------------
# config errors


def test_a_model_key_that_gptconfig_refuses_is_one_line(tmp_path, data_dir):
    with pytest.raises(SystemExit) as error:
        run(tmp_path, data_dir, '--activation=swish')
    assert "activation='swish' is not one of" in str(error.value) and '\n' not in str(error.value)


def test_tokens_per_step_that_does_not_divide_says_which_values_would(tmp_path, data_dir):
    with pytest.raises(SystemExit, match=r"not a multiple of .* = 2 \* 32 \* 1 = 64; use tokens_per_step=64 or 128$"):
        run(tmp_path, data_dir, '--tokens_per_step=100')
    with pytest.raises(SystemExit, match=r"use tokens_per_step=128 or 256, or micro_batch_size in \[1, 2, 3, 6\]"):
        run(tmp_path, data_dir, '--tokens_per_step=192', '--micro_batch_size=4')


def test_vocab_size_smaller_than_the_data_stops(tmp_path, data_dir):
    with pytest.raises(SystemExit, match=r"vocab_size=128 is smaller than the data's 256"):
        run(tmp_path, data_dir, '--vocab_size=128')


def test_resume_needs_a_checkpoint_of_the_same_model(baseline, tmp_path, data_dir):
    with pytest.raises(SystemExit, match="no checkpoint at .*ckpt.pt; train from scratch"):
        run(tmp_path, data_dir, '--init_from=resume')
    with pytest.raises(SystemExit, match=r"holds a different model: it has n_layer=2 \(now 3\)"):
        run(baseline, data_dir, '--init_from=resume', '--n_layer=3')


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(SystemExit, match="python data/nowhere/prepare.py"):
        train.main([*TINY, f'--data_dir={tmp_path / "nowhere"}', f'--out_dir={tmp_path}'])


# -----------------------------------------------------------------------------
# nothing a user made is lost, nothing breaks in a cryptic way


def test_stale_temp_files_are_cleared_and_saves_fsync_before_renaming(stopped, tmp_path, data_dir, monkeypatch):
    out = shutil.copytree(stopped, tmp_path / 'resumed')
    for name in ('ckpt.pt.tmp', 'ckpt.pt.4242.tmp', 'log.jsonl.tmp'):  # what kills mid-save left
        (tmp_path / 'resumed' / name).write_bytes(b'half a checkpoint')
    events = []  # ('fsync', the synced file) and ('replace', source, target), in order
    monkeypatch.setattr(checkpoint.os, 'fsync', lambda fd: events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}'))))
    real_replace = checkpoint.os.replace
    monkeypatch.setattr(checkpoint.os, 'replace', lambda a, b: (events.append(('replace', a, b)), real_replace(a, b)))
    run(out, data_dir, '--init_from=resume', f'--stop_step={STOP + 1}')
    assert sorted(os.listdir(out)) == ['ckpt.pt', 'log.jsonl', 'run.lock']  # run.lock: see lock_out_dir
    # the checkpoint's own save: its temp file on disk, then renamed, then the rename itself made durable
    ckpt = os.path.join(out, 'ckpt.pt')
    rename = events.index(('replace', ckpt + '.tmp', ckpt))
    assert events[rename - 1] == ('fsync', ckpt + '.tmp') and events[rename + 1] == ('fsync', str(out))


@pytest.mark.parametrize('damage', ['empty', 'random bytes', 'cut short'])
def test_a_damaged_checkpoint_is_named_in_one_line(stopped, tmp_path, data_dir, capsys, damage):
    out = shutil.copytree(stopped, tmp_path / 'damaged')
    path = os.path.join(out, 'ckpt.pt')
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write({'empty': b'', 'random bytes': os.urandom(4096), 'cut short': data[:len(data) // 2]}[damage])
    for call in (lambda: run(out, data_dir, '--init_from=resume'), lambda: sample.main([f'--out_dir={out}'])):
        with pytest.raises(SystemExit) as error:
            call()
        message = str(error.value.code)
        assert f"{path} is not a readable checkpoint" in message and '\n' not in message
        assert '_use_new_zipfile_serialization' not in message


def test_token_ids_beyond_the_datas_vocabulary_name_the_shard(tmp_path, data_dir):
    bad = tmp_path / 'bad'
    os.makedirs(bad)
    shutil.copy(os.path.join(data_dir, 'tiny_val_000000.bin'), bad)
    write_shard(str(bad / 'tiny_train_000000.bin'), np.arange(300) % 200)  # ids fit a vocabulary of 200
    write_shard(str(bad / 'tiny_train_000001.bin'), np.arange(300) % 250)  # ids up to 249
    with open(bad / 'meta.json', 'w') as f:
        json.dump({'tokenizer': 'bytes', 'vocab_size': 256}, f)
    with open(os.path.join(data_dir, 'meta.json')) as f:
        meta = json.load(f)
    meta_bad = dict(meta, tokenizer='char', vocab_size=200, chars=''.join(chr(0x100 + i) for i in range(200)))
    with open(bad / 'meta.json', 'w') as f:
        json.dump(meta_bad, f)
    # the second shard opens at step 3, after two steps from the first (it holds two spans of 128 tokens)
    with pytest.raises(SystemExit, match=r"tiny_train_000001.bin holds token id 249, but its meta.json says "
                                         r"vocab_size 200: the shard disagrees with its meta.json; re-prepare"):
        run(tmp_path / 'out', str(bad), '--max_steps=5')


def test_weights_made_non_finite_by_the_update_are_never_saved(tmp_path, data_dir, monkeypatch):
    real_step = torch.optim.AdamW.step

    def overflowing_step(self, *args, **kwargs):  # an update that overflows, while the loss was still finite
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]['params'][0].view(-1)[0] = float('inf')
        return result

    monkeypatch.setattr(torch.optim.AdamW, 'step', overflowing_step)
    with pytest.raises(SystemExit, match=r"step 1: the update made some weights inf or NaN; not saved"):
        run(tmp_path, data_dir, '--ckpt_interval=1')
    assert not os.path.exists(tmp_path / 'ckpt.pt')


def test_an_unparsable_log_line_is_dropped_with_a_warning(stopped, tmp_path, data_dir, capsys):
    out = shutil.copytree(stopped, tmp_path / 'resumed')
    before = log_lines(out)
    with open(os.path.join(out, 'log.jsonl'), 'a') as f:
        f.write('{"step": 5, "loss": \n')  # a whole line, but not JSON
    run(out, data_dir, '--init_from=resume', f'--stop_step={STOP + 1}')
    out_text = capsys.readouterr().out
    assert f"warning: {out}/log.jsonl line {STOP + 2} is not a log record; dropped it" in out_text
    after = log_lines(out)
    assert after[:-1] == before and json.loads(after[-1])['step'] == STOP + 1


def test_a_scratch_run_never_replaces_a_checkpoint_unasked(stopped, tmp_path, data_dir):
    out = shutil.copytree(stopped, tmp_path / 'again')
    log_before = open(os.path.join(out, 'log.jsonl')).read()
    with pytest.raises(SystemExit) as error:
        run(out, data_dir)
    assert str(error.value.code) == (f"{out}/ckpt.pt holds a run at step {STOP}: continue it with --init_from=resume, "
                                     "replace it with --overwrite=True, or train into another --out_dir")
    assert open(os.path.join(out, 'log.jsonl')).read() == log_before
    run(out, data_dir, '--overwrite=True', '--max_steps=2')
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['step'] == 2


def test_a_run_too_big_for_memory_is_refused_before_allocating(tmp_path, data_dir):
    with pytest.raises(SystemExit, match=r"this run needs about [\d.]+ GiB but this machine's RAM has [\d.]+ GiB "
                                         r"free: 1649.31 B parameters"):
        run(tmp_path, data_dir, '--n_embd=65536', '--n_layer=64', '--ffn_hidden=65536')
    assert not os.path.exists(tmp_path / 'ckpt.pt')


def test_gpu_settings_on_the_cpu_warn(tmp_path, data_dir, capsys):
    run(tmp_path, data_dir, '--dtype=bfloat16', '--max_steps=1')
    assert "warning: GPU settings on the CPU (dtype=bfloat16, compile=False)" in capsys.readouterr().out


def test_threads_default_to_the_cores_other_work_leaves_idle(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3})
    for load, threads in ((0.1, 4), (1.4, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, 'getloadavg', lambda: (load, 0.0, 0.0))
        assert common.cpu_threads() == threads
    monkeypatch.setenv('OMP_NUM_THREADS', '3')  # set by the user: torch's reading of it stands
    assert common.cpu_threads() == torch.get_num_threads()


def test_errors_under_torchrun_are_printed_once_without_tracebacks(tmp_path, data_dir):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
           *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--learning_rat=1']
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("unknown key 'learning_rat'; did you mean --learning_rate?") == 1, output
    assert 'train.py", line' not in output  # no traceback from the training processes


# -----------------------------------------------------------------------------
# what clusters do: a process killed, a peer that never comes, a double launch, a full disk, another world size

# train.py under torchrun with the faults of a restart: rank 0 SIGKILLed before step KILLED + 1 in the first attempt,
# and rank 1 late to join the next (with the dead attempt's keys still in torchrun's store, that made the restarted
# processes connect to dead peers or wait for each other forever)
FAULTY_TRAIN = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import train
attempt, rank = int(os.environ['TORCHELASTIC_RESTART_COUNT']), int(os.environ['RANK'])
if attempt and rank == 1:
    time.sleep(2)
lr_at = train.lr_at

def lr_or_kill(step, cfg):
    if (attempt, rank, step) == (0, 0, {killed}):
        os.kill(os.getpid(), signal.SIGKILL)
    return lr_at(step, cfg)

train.lr_at = lr_or_kill
train.main(sys.argv[1:])
"""
KILLED = 14  # the steps done when rank 0 dies; the last checkpoint is at step 10


def test_a_killed_process_restarts_by_itself_and_ends_with_the_same_weights(baseline, tmp_path, data_dir):
    script = tmp_path / 'faulty_train.py'
    script.write_text(FAULTY_TRAIN.format(root=ROOT, killed=KILLED))
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '--max_restarts=1',
           str(script), *TINY, f'--data_dir={data_dir}', f'--out_dir={out}', '--init_from=auto', '--ckpt_interval=5']
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert 'exitcode: -9' in output and f"resumed from {out}/ckpt.pt at step 10" in output
    # the uninterrupted single process's log and weights (two processes sum the validation loss in another order)
    (losses, val_losses), (expected, expected_val) = read_log(out), read_log(baseline)
    assert losses == pytest.approx(expected, rel=1e-6) and val_losses == pytest.approx(expected_val, rel=1e-6)
    restarted, uninterrupted = weights(out), weights(baseline)
    for k in uninterrupted:
        torch.testing.assert_close(restarted[k], uninterrupted[k], rtol=0, atol=1e-6)


def test_a_peer_that_never_comes_is_one_line_after_dist_timeout_s(tmp_path, data_dir):
    # rank 0 of two, launched by hand as torchrun would; rank 1 never comes
    env = {**ENV, 'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '2', 'MASTER_ADDR': '127.0.0.1',
           'MASTER_PORT': str(free_port())}
    cmd = [sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--dist_timeout_s=2']
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1 and 'Traceback' not in output, output
    assert output.splitlines()[-1].startswith("the processes lost each other (")  # then torch's reason
    assert output.splitlines()[-1].endswith("the others waited for it more than dist_timeout_s=2 s; if one process "
                                            "may pause that long (a slow checkpoint save, say), raise --dist_timeout_s")


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_a_second_run_into_a_held_out_dir_is_refused_and_a_killed_one_blocks_nothing(tmp_path, data_dir, capsys):
    cmd = [sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path}', '--max_steps=100000',
           '--ckpt_interval=1']
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]  # the same command twice at once: a double submit
    try:
        deadline = time.time() + 120
        while all(p.poll() is None for p in runs):
            assert time.time() < deadline
            time.sleep(0.05)
        refused, holder = sorted(runs, key=lambda p: p.poll() is None)
        output = refused.communicate(timeout=60)[0]
        assert refused.returncode == 1 and holder.poll() is None, output
        assert output.strip().splitlines()[-1] == (f"{tmp_path} is in use by another run (pid {holder.pid} on host "
                                                   f"{socket.gethostname()}): wait for it to end, or train into "
                                                   "another --out_dir")
        log = tmp_path / 'log.jsonl'
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):  # step 1 saved
            assert holder.poll() is None and time.time() < deadline, holder.communicate()[0]
            time.sleep(0.05)
    finally:
        for p in runs:
            p.kill()  # SIGKILL: the holder has no chance to unlock
            p.wait()
    step = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['step']
    run(tmp_path, data_dir, '--max_steps=100000', '--init_from=auto', f'--stop_step={step + 1}')
    assert f"resumed from {tmp_path}/ckpt.pt at step {step}" in capsys.readouterr().out
    assert sorted(read_log(tmp_path)[0]) == list(range(1, step + 2))  # one run's steps, each once


def test_a_disk_that_fills_during_a_save_keeps_the_last_checkpoint(baseline, stopped, tmp_path, data_dir):
    out = shutil.copytree(stopped, tmp_path / 'full')
    path = os.path.join(out, 'ckpt.pt')
    before = open(path, 'rb').read()
    limit = len(before) // 2  # ulimit -f: no file may grow past half a checkpoint, so the next save cannot fit

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={out}', '--init_from=auto',
           '--ckpt_interval=2', '--act_impl=plain']  # plain: no compiler, whose files the limit would stop first
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 1 and 'Traceback' not in output, output
    assert re.fullmatch(rf"could not save {path}: File too large \(it needs about 0\.4 MiB; its filesystem has "
                        r"[\d,.]+ MiB free, less any quota or ulimit -f\); the previous checkpoint is intact: make "
                        r"room, then run again with --init_from=auto", output.splitlines()[-1]), output
    assert open(path, 'rb').read() == before and not os.path.exists(path + '.tmp')
    run(out, data_dir, '--init_from=auto')  # room again: it goes on from step 12
    assert read_log(out) == read_log(baseline)
    resumed, uninterrupted = weights(out), weights(baseline)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_a_ddp_checkpoint_of_two_processes_resumes_on_one_and_on_four(baseline, ddp_stopped, tmp_path, data_dir):
    # the data position is counted in windows over all processes (12 steps x 4 windows of 32 tokens), so it
    # means the same on any number of them: each step reads the same windows, whatever the split
    assert torch.load(os.path.join(ddp_stopped, 'ckpt.pt'), weights_only=True)['loader']['index'] == STOP * 4
    one = run(shutil.copytree(ddp_stopped, tmp_path / 'one'), data_dir, '--init_from=auto')
    four = torchrun(4, shutil.copytree(ddp_stopped, tmp_path / 'four'), data_dir, '--init_from=auto',
                    '--micro_batch_size=1')  # 128 tokens per step = 1 x 32 x 4 processes
    for out in (one, four):
        (losses, val_losses), (expected, expected_val) = read_log(out), read_log(baseline)
        assert losses == pytest.approx(expected, rel=1e-5) and val_losses == pytest.approx(expected_val, rel=1e-5)
        resumed, uninterrupted = weights(out), weights(baseline)
        for k in uninterrupted:
            torch.testing.assert_close(resumed[k], uninterrupted[k], rtol=0, atol=1e-5)


# -----------------------------------------------------------------------------
# sampling


def generate(capsys, *args):
    sample.main(['--num_samples=1', '--temperature=0', *args])
    return capsys.readouterr().out


def test_sample_greedy_text_is_the_same_with_and_without_the_kv_cache(baseline, capsys):
    # 4 prompt + 40 new tokens: past block_size (32), so the sliding window is covered too
    cached = generate(capsys, f'--out_dir={baseline}', '--start=def ', '--max_new_tokens=40')
    uncached = generate(capsys, f'--out_dir={baseline}', '--start=def ', '--max_new_tokens=40', '--no_cache')
    assert cached == uncached and cached.startswith('def ')
    assert len(cached.split('\n' + '-' * 40)[0].encode()) == 44  # bytes: one per token


def test_sample_reads_the_prompt_from_a_file(baseline, capsys, tmp_path):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('class GPT')
    text = generate(capsys, f'--out_dir={baseline}', f'--start=FILE:{prompt}', '--max_new_tokens=5')
    assert text.startswith('class GPT')


def test_sample_without_a_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(SystemExit) as error:
        sample.main([f'--out_dir={tmp_path}'])
    assert str(error.value.code) == (f"sample.py: no checkpoint in {str(tmp_path)!r} (neither ckpt.pt nor ckpt/); "
                                     f"train one with python train.py --out_dir={tmp_path}")


def test_load_model_returns_the_trained_model_and_its_config(baseline):
    ckpt = checkpoint.load_checkpoint(baseline)
    model, config = ckpt['model'], ckpt['config']
    assert not model.training and config['n_layer'] == 2 and config['max_steps'] == 24
    ckpt = torch.load(os.path.join(baseline, 'ckpt.pt'), weights_only=True)
    assert all(torch.equal(model.state_dict()[k], ckpt['model'][k]) for k in ckpt['model'])


# -----------------------------------------------------------------------------
# run tracking


class FakeWandb:
    """wandb's init and log as train.py uses them, recorded."""
    def __init__(self):
        self.inits, self.records = [], []

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return types.SimpleNamespace(id=kwargs['id'] or 'run1', log=lambda record, step: self.records.append(
            (step, record)))


def test_wandb_gets_what_the_log_gets_and_keeps_its_run_across_a_resume(tmp_path, data_dir, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    out = run(tmp_path, data_dir, '--wandb_log=True', '--wandb_project=p', f'--stop_step={STOP}')
    run(out, data_dir, '--wandb_log=True', '--wandb_project=p', '--init_from=resume')
    with open(os.path.join(out, 'log.jsonl')) as f:
        logged = [json.loads(line) for line in f]
    assert [record for _, record in fake.records] == logged  # every record, in order, across the resume
    assert all(step == record['step'] for step, record in fake.records)
    first, again = fake.inits
    assert first['project'] == 'p' and first['name'] == os.path.basename(out) and first['id'] is None
    assert again['id'] == 'run1' and again['resume'] == 'allow'  # the resumed run continues the same W&B run


def test_wandb_missing_is_one_line(tmp_path, data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb fails
    with pytest.raises(SystemExit, match=r"^wandb_log=True needs the wandb package: pip install wandb"):
        run(tmp_path, data_dir, '--wandb_log=True', '--max_steps=1')


def test_wandb_offline_run_holds_the_logged_records(tmp_path, data_dir):
    pytest.importorskip('wandb', reason="wandb is not installed")
    env = {**ENV, 'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'}
    cmd = [sys.executable, 'train.py', *TINY, f'--data_dir={data_dir}', f'--out_dir={tmp_path / "run"}',
           '--max_steps=8', '--wandb_log=True', '--wandb_run_name=tiny']
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (records,) = glob.glob(str(tmp_path / 'wandb' / 'offline-run-*' / '*.wandb'))
    data = open(records, 'rb').read()  # wandb's record file: protobuf, whose strings stay readable
    assert b'tiny' in data and b'val_loss' in data and b'tok_per_s' in data
