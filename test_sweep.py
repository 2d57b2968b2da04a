"""Tests of sweep.py and analyze.py: the analyses' math, the report's numbers, and a tiny sweep end to end.

    python -m pytest test_sweep.py -q
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sweep
from analyze import analyze, effective_rank, layer_similarity, mean_off_diagonal
from data.shards import write_dataset

# -----------------------------------------------------------------------------
# effective rank and layer similarity on matrices whose answer is known


def test_effective_rank_of_identity_is_its_size():
    for n in (1, 5, 32):
        assert effective_rank(torch.eye(n)) == pytest.approx(n)


def test_effective_rank_of_rank_one_matrix_is_one():
    u, v = torch.randn(20, 1, dtype=torch.float64), torch.randn(1, 30, dtype=torch.float64)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-9)
    assert effective_rank((u @ v).float()) == pytest.approx(1.0, abs=1e-4)  # float32 rounding adds a little


def test_effective_rank_is_exp_entropy_of_singular_values():
    s = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.0])
    p = s[s > 0] / s.sum()
    expected = math.exp(-(p * p.log()).sum().item())
    # hide the singular values behind random rotations on both sides; a tall matrix, then its transpose
    q1, _ = torch.linalg.qr(torch.randn(8, 8))
    q2, _ = torch.linalg.qr(torch.randn(5, 5))
    w = q1[:, :5] @ torch.diag(s) @ q2
    assert effective_rank(w) == pytest.approx(expected, rel=1e-6)
    assert effective_rank(w.T) == pytest.approx(expected, rel=1e-6)
    assert 1 < expected < 4  # between the two extremes, so the test tells rank-1 and full rank apart


def test_effective_rank_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="zero matrix"):
        effective_rank(torch.zeros(3, 3))


def test_identical_hidden_states_have_similarity_one():
    h = torch.randn(2, 7, 16)
    s = layer_similarity([h, h.clone(), 3 * h])  # scaling does not change a cosine
    assert torch.allclose(s, torch.ones(3, 3), atol=1e-6)
    assert mean_off_diagonal(s) == pytest.approx(1.0, abs=1e-6)


def test_similarity_of_opposite_and_orthogonal_states():
    e = torch.eye(4)
    a = e[[0, 1]].view(1, 2, 4)  # tokens along axes 0 and 1
    b = e[[2, 3]].view(1, 2, 4)  # orthogonal to a, token by token
    s = layer_similarity([a, -a, b])
    expected = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(s, expected, atol=1e-6)
    assert mean_off_diagonal(s) == pytest.approx(-2 / 6)


def test_similarity_averages_per_token_cosines():
    # token 0 is the same in both layers (cos 1), token 1 is orthogonal (cos 0): the mean is 0.5
    a = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    b = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    assert layer_similarity([a, b])[0, 1].item() == pytest.approx(0.5)


# -----------------------------------------------------------------------------
# the report's numbers on hand-made curves


def test_tokens_to_reach_interpolates_between_evaluations():
    curve = [(0, 4.0), (100, 3.0), (200, 2.0)]
    assert sweep.tokens_to_reach(curve, 2.0) == pytest.approx(200)
    assert sweep.tokens_to_reach(curve, 2.5) == pytest.approx(150)
    assert sweep.tokens_to_reach(curve, 4.5) == 0
    assert sweep.tokens_to_reach(curve, 1.9) is None


def test_speedups_against_swiglu():
    curves = {'swiglu': [(0, 4.0, 4.0, 4.0), (100, 3.0, 3.0, 3.0), (200, 2.0, 2.0, 2.0)],
              'polynorm': [(0, 4.0, 4.0, 4.0), (100, 2.5, 2.5, 2.5), (200, 1.5, 1.5, 1.5)],  # 2.0 at 150 tokens
              'relu': [(0, 4.0, 4.0, 4.0), (100, 3.5, 3.5, 3.5), (200, 2.5, 2.5, 2.5)]}  # never gets to 2.0
    result = sweep.speedups(curves)
    assert result == {'swiglu': '1.00', 'polynorm': f'{200 / 150:.2f}', 'relu': '< 1.00'}
    assert set(sweep.speedups({'relu': curves['relu']}).values()) == {'n/a'}
    # there at the first evaluation already: only a lower bound is known
    curves['gelu'] = [(50, 1.9, 1.9, 1.9), (200, 1.0, 1.0, 1.0)]
    assert sweep.speedups(curves)['gelu'] == f'>= {200 / 50:.2f}'


def test_mean_curve_over_seeds():
    curve = sweep.mean_curve([[(10, 3.0), (20, 2.0)], [(10, 1.0), (20, 1.0)]])
    assert curve == [(10, 2.0, 1.0, 3.0), (20, 1.5, 1.0, 2.0)]
    with pytest.raises(SystemExit, match="different token counts"):
        sweep.mean_curve([[(10, 3.0)], [(11, 3.0)]])


# -----------------------------------------------------------------------------
# planning runs, command-line checks, and where a run stands


def test_plan_runs_names_orders_and_seeds():
    runs = sweep.plan_runs('out', ['swiglu', 'polynorm'], [2, 3], 2)
    names = [os.path.basename(r['dir']) for r in runs]
    assert names == ['swiglu_s0', 'swiglu_s1', 'polynorm_r2_s0', 'polynorm_r2_s1', 'polynorm_r3_s0', 'polynorm_r3_s1']
    assert runs[2]['keys'] == {'activation': 'polynorm', 'poly_order': 2, 'seed': 0,
                               'out_dir': os.path.join('out', 'polynorm_r2_s0')}


@pytest.mark.parametrize("argv, message", [
    (['--activations', 'relu,tanh'], "tanh"),
    (['--seeds', '0'], "at least 1"),
    (['--orders', '2,x'], "comma-separated integers"),
    (['--activations', 'relu', '--orders', '2'], "polyrelu and polynorm"),
    (['--out_dir=elsewhere'], "--out"),
    (['max_steps=5'], "--key=value"),
    (['--orders', '2', '--poly_order=3'], "not both"),
])
def test_bad_arguments_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.parse_args(argv)
    assert message in str(e.value) + capsys.readouterr().err


def test_run_state_from_log_and_checkpoint(tmp_path):
    run = str(tmp_path)
    assert sweep.run_state(run, max_steps=20) == 'new'
    records = [{'step': 10, 'tokens': 100, 'loss': 2.0, 'dt_ms': 5.0},
               {'step': 10, 'tokens': 100, 'val_loss': 2.1}]
    log = tmp_path / 'log.jsonl'
    log.write_text(''.join(json.dumps(r) + '\n' for r in records) + '{"step": 1')  # killed mid-line
    assert sweep.run_state(run, max_steps=20) == 'new'  # no checkpoint to resume from
    (tmp_path / 'ckpt.pt').write_bytes(b'')
    assert sweep.run_state(run, max_steps=20) == 'resume'
    with open(log, 'a') as f:
        f.write('\n' + json.dumps({'step': 20, 'tokens': 200, 'val_loss': 1.9}) + '\n')
    with pytest.raises(SystemExit, match="not JSON"):  # a bad line in the middle is corruption, not a kill
        sweep.run_state(run, max_steps=20)
    log.write_text(''.join(json.dumps(r) + '\n' for r in records + [{'step': 20, 'tokens': 200, 'val_loss': 1.9}]))
    assert sweep.run_state(run, max_steps=20) == 'done'


# -----------------------------------------------------------------------------
# a tiny sweep end to end: train.py runs as a subprocess, analyze.py reads the checkpoints

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--ffn_hidden=64', '--tokens_per_step=256',
        '--micro_batch_size=8', '--max_steps=6', '--warmup_steps=2', '--eval_interval=3', '--eval_steps=2',
        '--log_interval=2', '--ckpt_interval=3']
HERE = os.path.dirname(os.path.abspath(__file__))
# tiny models gain nothing from threads, and on a busy machine idle-spinning threads slow them down a lot
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def run_sweep(out, data_dir, *extra):
    argv = [os.path.join(HERE, 'sweep.py'), '--activations', 'swiglu,polynorm', '--seeds', '1', '--out', out,
            f'--data_dir={data_dir}', *TINY, *extra]
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
    """A sweep of swiglu and polynorm, one seed each, on byte-level data made of this project's sources,
    whose swiglu run was interrupted at step 3 of 6 before the sweep was started."""
    root = tmp_path_factory.mktemp('sweep')
    data_dir, out = str(root / 'data'), str(root / 'out')
    text = [open(os.path.join(HERE, name), 'rb').read() for name in ('sweep.py', 'analyze.py')]
    write_dataset(data_dir, 'tiny', np.frombuffer(text[0], np.uint8), np.frombuffer(text[1], np.uint8),
                  {'tokenizer': 'bytes', 'vocab_size': 256})
    # the swiglu run as the sweep would start it, stopped after its checkpoint at step 3
    run = sweep.plan_runs(out, ['swiglu'], None, 1)[0]
    args = sweep.train_args(sweep.preset_path('cpu'), sweep.parse_overrides([f'--data_dir={data_dir}', *TINY]), run)
    subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), *args, '--stop_step=3'], env=ENV, check=True,
                   capture_output=True, timeout=300)
    return out, data_dir, run_sweep(out, data_dir)


def table_rows(report):
    return {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
            for line in report.splitlines() if line.startswith('| ') and not line.startswith('| activation')}


def test_tiny_sweep_resumes_and_reports(tiny_sweep):
    out, _, stdout = tiny_sweep
    assert 'resuming swiglu_s0' in stdout and 'starting polynorm_s0' in stdout
    _, evals = sweep.read_log(os.path.join(out, 'swiglu_s0'))
    assert [r['step'] for r in evals] == [3, 6]  # the eval before the interruption is kept, the run completed
    report = open(os.path.join(out, 'report.md')).read()
    assert report in stdout
    rows = table_rows(report)
    assert list(rows) == ['swiglu', 'polynorm']
    for name, (params, val, train, speedup, ms, *analyses) in rows.items():
        assert params.endswith(' M') and 0.01 < float(params[:-2]) < 0.1  # 2 layers of 32 and 256-token embeddings
        assert 0 < float(val) < 10 and 0 < float(train) < 10  # one seed: a plain number, no ± part
        assert float(ms) > 0
        assert speedup == '1.00' if name == 'swiglu' else float(speedup.lstrip('<>= ')) > 0
        *eranks, similarity = analyses  # up, down, gate
        assert all(1 <= float(e) <= 32 for e in eranks[:2])  # at most n_embd, the smaller side of each matrix
        assert -1 <= float(similarity) <= 1
    assert 1 <= float(rows['swiglu'][7]) <= 32 and rows['polynorm'][7] == '-'  # only SwiGLU has a gate


def test_restarted_sweep_redoes_nothing(tiny_sweep):
    out, data_dir, first = tiny_sweep
    ckpts = [os.path.join(out, run, 'ckpt.pt') for run in ('swiglu_s0', 'polynorm_s0')]
    mtimes = [os.path.getmtime(path) for path in ckpts]
    stdout = run_sweep(out, data_dir)
    assert 'done already: swiglu_s0' in stdout and 'done already: polynorm_s0' in stdout
    assert 'starting' not in stdout and 'resuming' not in stdout
    assert [os.path.getmtime(path) for path in ckpts] == mtimes
    assert table_rows(stdout) == table_rows(first)
    with pytest.raises(AssertionError, match="other settings"):  # the same folders with another model
        run_sweep(out, data_dir, '--n_embd=64')


def test_analyze_tiny_checkpoint(tiny_sweep):
    out, _, _ = tiny_sweep
    for run, roles in (('swiglu_s0', {'up', 'down', 'gate'}), ('polynorm_s0', {'up', 'down'})):
        result = analyze(os.path.join(out, run))
        assert len(result['erank']) == 2  # one entry per layer
        for layer in result['erank']:
            assert set(layer) == roles
            assert all(1 <= e <= 32 for e in layer.values())
        s = result['similarity']
        assert s.shape == (2, 2)
        assert torch.allclose(s.diagonal(), torch.ones(2), atol=1e-5)
        assert torch.allclose(s, s.T, atol=1e-6) and s.abs().max() <= 1 + 1e-5  # float32 rounding
    command = [sys.executable, os.path.join(HERE, 'analyze.py'), '--out_dir', os.path.join(out, 'polynorm_s0')]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'effective rank of the FFN weights' in done.stdout and 'mean: erank_up' in done.stdout


def test_analyze_without_checkpoint_says_so(tmp_path):
    command = [sys.executable, os.path.join(HERE, 'analyze.py'), '--out_dir', str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2 and 'no checkpoint' in done.stderr
