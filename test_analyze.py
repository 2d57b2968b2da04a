"""Tests of analyze.py: effective rank and layer similarity on matrices whose answer is known, and both analyses
of tiny checkpoints that train.py wrote.

    python -m pytest test_analyze.py -q
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from analyze import analyze, effective_rank, layer_similarity, mean_off_diagonal
from checkpoint import load_checkpoint
from data.shards import write_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
# tiny models gain nothing from threads, and on a busy machine idle-spinning threads slow them down a lot
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}

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


def test_similarity_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        layer_similarity([torch.ones(1, 2, 4), torch.ones(1, 3, 4)])
    with pytest.raises(ValueError, match="at least 2 layers"):
        mean_off_diagonal(torch.ones(1, 1))


# -----------------------------------------------------------------------------
# tiny checkpoints of train.py, on byte-level data made of this project's sources

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--ffn_hidden=64', '--tokens_per_step=256',
        '--micro_batch_size=8', '--max_steps=2', '--warmup_steps=1', '--eval_interval=2', '--eval_steps=1',
        '--log_interval=1', '--ckpt_interval=2', '--device=cpu', '--compile=False']


@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
    """(folder of the runs, {activation: its run folder}) for a 2-step swiglu and polynorm run each."""
    root = tmp_path_factory.mktemp('analyze')
    data_dir = str(root / 'data')
    text = [open(os.path.join(HERE, name), 'rb').read() for name in ('analyze.py', 'report.py')]
    write_dataset(data_dir, 'tiny', np.frombuffer(text[0], np.uint8), np.frombuffer(text[1], np.uint8),
                  {'tokenizer': 'bytes', 'vocab_size': 256})
    runs = {}
    for activation in ('swiglu', 'polynorm'):
        runs[activation] = str(root / activation)
        command = [sys.executable, os.path.join(HERE, 'train.py'), f'--data_dir={data_dir}',
                   f'--out_dir={runs[activation]}', f'--activation={activation}', *TINY]
        done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    return root, runs


def test_analyze_tiny_checkpoint(tiny_runs):
    _, runs = tiny_runs
    for activation, roles in (('swiglu', {'up', 'down', 'gate'}), ('polynorm', {'up', 'down'})):
        result = analyze(runs[activation])
        assert len(result['erank']) == 2  # one entry per layer
        model = load_checkpoint(runs[activation])['model']
        for layer, block in zip(result['erank'], model.blocks):
            assert set(layer) == roles
            assert all(1 <= e <= 32 for e in layer.values())  # at most n_embd, the smaller side of each matrix
            # each role's number is that matrix's own: the labels are not swapped
            for role in roles:
                assert layer[role] == pytest.approx(effective_rank(getattr(block.ffn, role).weight), rel=1e-6)
            assert len({round(e, 3) for e in layer.values()}) == len(roles)  # distinct, so that a swap shows
        s = result['similarity']
        assert s.shape == (2, 2)
        assert torch.allclose(s.diagonal(), torch.ones(2), atol=1e-5)
        assert torch.allclose(s, s.T, atol=1e-6) and s.abs().max() <= 1 + 1e-5  # float32 rounding
        assert result['moe'] is False and 0 < result['params'] < 100_000  # 2 layers of 32, 256 bytes


def test_analyze_py_prints_and_writes_json(tiny_runs):
    root, runs = tiny_runs
    path = root / 'analyses.json'
    command = [sys.executable, os.path.join(HERE, 'analyze.py'), '--out_dir', runs['swiglu'],
               '--out_dir', runs['polynorm'], '--json', str(path), '--no_plot']
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('effective rank of the FFN weights') == 2 and 'mean: erank_up' in done.stdout
    numbers = json.loads(path.read_text())  # what sweep.py reads: run folder -> numbers
    assert set(numbers) == set(runs.values())
    assert set(numbers[runs['swiglu']]) == {'erank_up', 'erank_down', 'erank_gate', 'similarity', 'params', 'moe'}
    assert 'erank_gate' not in numbers[runs['polynorm']]
    assert -1 <= numbers[runs['polynorm']]['similarity'] <= 1
    assert not any(name.endswith('.png') for run in runs.values() for name in os.listdir(run))  # --no_plot


def test_analyze_without_checkpoint_says_so(tmp_path):
    command = [sys.executable, os.path.join(HERE, 'analyze.py'), '--out_dir', str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 2 and 'no checkpoint' in done.stderr
    assert 'Traceback' not in done.stderr
