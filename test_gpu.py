"""
The CUDA paths, checked on a GPU: the Triton kernels compiled for it (not interpreted) against float64, the fused
op inside the model and under inductor's fullgraph compile, the MoE's grouped GEMM against its loop in bf16, flash
attention under autocast, and bench.py's CUDA timing. Without CUDA these tests skip, saying so; .ci/gpu runs them
on a GPU. The last tests check .ci/gpu itself, and run anywhere.
Run: python -m pytest -q test_gpu.py
"""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time

import pytest
import torch

import bench
import model
from model import GPT, GPTConfig

ROOT = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(ROOT, '.ci', 'gpu')
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; .ci/gpu runs these tests on one")
hopper = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                            reason="needs a CUDA GPU of compute capability 9.0 or more, for torch._grouped_mm")


def small_config(**overrides):
    return GPTConfig(**{**dict(n_layer=2, n_head=2, n_embd=128, block_size=64, vocab_size=256, ffn_hidden=384,
                               moe_ffn_hidden=128), **overrides})


def assert_close_relative(got, want, tolerance):
    """max |got - want| <= tolerance * max |want|: a bound on the scale of the values, for bf16 results."""
    error = (got.double() - want.double()).abs().max().item()
    assert error <= tolerance * want.double().abs().max().item(), (error, want.abs().max().item())


def assert_grads_close(got, want, tolerance=2e-2):
    """All of a model's gradients as one vector, within tolerance in norm. bf16 rounds two paths apart a little,
    and a scalar's gradient (a sum over every element, much of it cancelling) can differ by more than its size
    says; a wrong backward would show in every weight upstream."""
    got, want = (torch.cat([g[name].double().flatten() for name in sorted(want)]) for g in (got, want))
    assert (got - want).norm() <= tolerance * want.norm(), ((got - want).norm().item(), want.norm().item())


# -----------------------------------------------------------------------------
# The kernels, compiled for the GPU


@cuda
def test_kernels_are_compiled_not_interpreted():
    polykernels = pytest.importorskip('polykernels')
    assert not polykernels.INTERPRETED, "TRITON_INTERPRET=1 is set: the kernels would not be compiled for the GPU"


@cuda
@pytest.mark.parametrize('width', [1536, 4096, 8256, 16384])  # one tile; one tile exactly; 2048-wide tiles + tail
@pytest.mark.parametrize('op', ['polynorm', 'polyrelu'])
def test_fused_matches_float64_at_the_model_widths(op, width):
    polykernels = pytest.importorskip('polykernels', reason="polykernels.py needs Triton")
    torch.manual_seed(0)
    plain, fused = {'polynorm': (model.poly_norm, polykernels.poly_norm_fused),
                    'polyrelu': (model.poly_relu, polykernels.poly_relu_fused)}[op]
    args = (1e-6,) if op == 'polynorm' else ()
    x = torch.randn(64, width, device='cuda', dtype=torch.bfloat16, requires_grad=True)
    weight = torch.tensor([0.5, 0.3, 0.2], device='cuda', requires_grad=True)
    bias = torch.tensor([0.1], device='cuda', requires_grad=True)
    dy = torch.randn_like(x)
    y = fused(x, weight, bias, *args)
    grads = torch.autograd.grad(y, (x, weight, bias), dy)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y_ref = plain(*leaves, *args)  # the model's definition, in float64
    grads_ref = torch.autograd.grad(y_ref, leaves, dy.double())
    assert y.dtype == torch.bfloat16 and grads[0].dtype == torch.bfloat16
    for got, want in zip((y, *grads), (y_ref, *grads_ref)):
        assert_close_relative(got, want, 1e-2)  # float32 math, rounded once to bf16 (dweight, dbias: float32)


# -----------------------------------------------------------------------------
# The fused op inside the model


def twin_models(activation, **overrides):
    """The same weights twice: act_impl 'triton' and 'plain'."""
    torch.manual_seed(0)
    fused = GPT(small_config(activation=activation, act_impl='triton', **overrides)).cuda()
    plain = GPT(small_config(activation=activation, act_impl='plain', **overrides)).cuda()
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def loss_and_grads(gpt, idx, compile_model=False):
    step_model = torch.compile(gpt, fullgraph=True) if compile_model else gpt
    with torch.autocast('cuda', dtype=torch.bfloat16):
        _, losses = step_model(idx, idx)
    losses['loss'].backward()
    return losses['loss'].detach(), {name: p.grad for name, p in gpt.named_parameters()}


@cuda
@pytest.mark.parametrize('activation', ['polynorm', 'polyrelu', 'polynorm_glu'])
def test_fused_op_inside_the_model_matches_the_plain_code(activation):
    fused, plain = twin_models(activation)
    idx = torch.randint(256, (4, 64), device='cuda')
    loss_f, grads_f = loss_and_grads(fused, idx)
    loss_p, grads_p = loss_and_grads(plain, idx)
    assert abs(loss_f.item() - loss_p.item()) < 1e-2
    assert_grads_close(grads_f, grads_p)


@cuda
@pytest.mark.parametrize('activation', ['polynorm', 'polynorm_glu'])
def test_inductor_fullgraph_through_the_custom_ops(activation):
    torch._dynamo.reset()
    fused, plain = twin_models(activation)
    idx = torch.randint(256, (4, 64), device='cuda')
    loss_c, grads_c = loss_and_grads(fused, idx, compile_model=True)  # fullgraph: a graph break raises
    loss_p, grads_p = loss_and_grads(plain, idx)
    assert abs(loss_c.item() - loss_p.item()) < 1e-2
    assert_grads_close(grads_c, grads_p)


# -----------------------------------------------------------------------------
# MoE and attention


@hopper
@pytest.mark.parametrize('activation', ['polynorm', 'swiglu'])
def test_moe_grouped_matches_the_loop_in_bf16(activation):
    torch.manual_seed(0)
    cfg = dict(activation=activation, n_experts=8, top_k=2, qk_norm=True)  # PolyNorm: the fused kernels
    grouped = GPT(small_config(moe_impl='grouped', **cfg)).cuda()
    loop = GPT(small_config(moe_impl='loop', **cfg)).cuda()
    loop.load_state_dict(grouped.state_dict())
    idx = torch.randint(256, (4, 64), device='cuda')
    loss_g, grads_g = loss_and_grads(grouped, idx)
    loss_l, grads_l = loss_and_grads(loop, idx)
    assert abs(loss_g.item() - loss_l.item()) < 2e-2
    assert_grads_close(grads_g, grads_l)


@cuda
def test_flash_attention_runs_under_autocast():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    flash = GPT(small_config(activation='relu2')).cuda()
    reference = GPT(small_config(activation='relu2')).cuda()
    reference.load_state_dict(flash.state_dict())
    idx = torch.randint(256, (4, 64), device='cuda')
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # flash alone: raises if attention's inputs do not suit it
        loss_f, grads_f = loss_and_grads(flash, idx)
    with sdpa_kernel(SDPBackend.MATH):
        loss_m, grads_m = loss_and_grads(reference, idx)
    assert abs(loss_f.item() - loss_m.item()) < 1e-2
    assert_grads_close(grads_f, grads_m)


# -----------------------------------------------------------------------------
# bench.py's CUDA timing


@cuda
def test_cuda_timing_measures_the_gpu_not_the_host():
    device = torch.device('cuda')
    x = torch.zeros(1024, device=device)

    def slow_host(_):  # 2 ms of host work before a tiny kernel: timed call by call, it would read about 2 ms
        time.sleep(0.002)
        x.add_(1)

    assert bench.measure(slow_host, 1, 10, device) < 0.5
    one_ms = int(bench.sleep_cycles_per_ms(device))

    def gpu_ms(_):  # 1 ms of GPU work
        torch.cuda._sleep(one_ms)

    assert 0.8 < bench.measure(gpu_ms, 1, 10, device) < 1.25


@cuda
def test_cuda_timing_refuses_a_function_that_synchronizes():
    def synchronizing(_):
        torch.cuda.synchronize()

    with pytest.raises(RuntimeError, match="could not queue the calls ahead of the GPU"):
        bench.measure(synchronizing, 1, 5, torch.device('cuda'))


# -----------------------------------------------------------------------------
# Liger's PolyNorm, and a second GPU


@cuda
def test_liger_poly_norm_agrees_with_float64(tmp_path):
    liger, reason = bench.liger_poly_norm_class()
    if liger is None:
        pytest.skip(reason)
    report = bench.main(['--device', 'cuda', '--rows', '64', '--widths', '1536', '--activations', 'polynorm',
                         '--impls', 'eager', 'liger', '--repeats', '2', '--out', str(tmp_path / 'liger')])
    rows = [r for r in report['activations']['activations'] if r['impl'] == 'liger']
    assert len(rows) == 1 and 'error' not in rows[0] and rows[0]['diff_vs_float64'] < 2e-2, rows


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_kernels_run_on_the_tensors_device_not_the_current_one():
    polykernels = pytest.importorskip('polykernels', reason="polykernels.py needs Triton")
    x = torch.randn(8, 96, device='cuda:1')
    weight, bias = torch.tensor([0.5, 0.3, 0.2], device='cuda:1'), torch.tensor([0.1], device='cuda:1')
    with torch.cuda.device(0):
        y = polykernels.poly_norm_fused(x, weight, bias)
    assert_close_relative(y, model.poly_norm(x.double(), weight.double(), bias.double(), 1e-6), 1e-4)


# -----------------------------------------------------------------------------
# .ci/gpu itself, on the CPU (CPU CI runs these; .ci/gpu leaves them out with -k 'not ci_gpu')


def ci_gpu(tmp_path, *args, **env):
    """Run .ci/gpu with its outputs, scratch and wheel folders under tmp_path."""
    env = {**os.environ, 'OUT': str(tmp_path / 'out'), 'SCRATCH': str(tmp_path / 'scratch'),
           'WHEEL_DIRS': str(tmp_path / 'wheels'), **env}
    return subprocess.run([SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def script_limits():
    """(stage -> limit in seconds, in the order declared; the kill grace; the stages run after the preflight)."""
    text = open(SCRIPT).read()
    declared = re.search(r'^declare -A LIMITS=\((.*?)\)$', text, re.M | re.S).group(1)
    limits = {name: int(s) for name, s in re.findall(r'\[(\w+)\]=(\d+)', declared)}
    grace = int(re.search(r'^GRACE=(\d+)$', text, re.M).group(1))
    return limits, grace, re.findall(r'^stage (\w+) ', text, re.M)


def test_ci_gpu_is_an_executable_bash_script_that_parses():
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR
    done = subprocess.run(['bash', '-n', SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ci_gpu_stages_run_most_valuable_first_within_330_seconds():
    limits, grace, stages = script_limits()
    assert stages == ['wheels', 'tests', 'bench_polynorm', 'bench_dense', 'bench_moe', 'train_dense', 'train_moe']
    assert list(limits) == ['preflight', *stages]  # every stage has a limit
    assert sum(limits.values()) + grace * len(limits) <= 330


def test_ci_gpu_without_a_gpu_says_so_in_one_line(tmp_path):
    done = ci_gpu(tmp_path, CUDA_VISIBLE_DEVICES='')  # no GPU, even on a GPU machine
    assert done.returncode == 2
    assert done.stdout == '' and done.stderr.count('\n') == 1 and 'no CUDA GPU' in done.stderr
    assert not (tmp_path / 'out').exists()


def test_ci_gpu_finds_python3_where_python_is_missing(tmp_path):
    if shutil.which('python', path='/usr/bin:/bin'):
        pytest.skip("this machine has /usr/bin/python: python3 would not be the only interpreter on PATH")
    folder = tmp_path / 'bin'
    folder.mkdir()
    (folder / 'python3').symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    done = subprocess.run([SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, 'PATH': f'{folder}:/usr/bin:/bin', 'CUDA_VISIBLE_DEVICES': '',
                               'OUT': str(tmp_path / 'out'), 'SCRATCH': str(tmp_path / 'scratch')})
    assert done.returncode == 2 and done.stderr.count('\n') == 1, done.stderr
    assert 'no CUDA GPU' in done.stderr and str(folder / 'python3') in done.stderr  # torch imported, under python3


def test_ci_gpu_says_when_torch_does_not_import(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, so no torch
    fake.chmod(0o755)
    done = ci_gpu(tmp_path, PYTHON=str(fake))
    assert done.returncode == 2 and done.stderr.count('\n') == 1, done.stderr
    assert 'cannot import torch and triton' in done.stderr and 'set PYTHON' in done.stderr


def test_ci_gpu_refuses_an_unknown_argument(tmp_path):
    done = ci_gpu(tmp_path, '--fast')
    assert done.returncode == 2 and done.stderr.count('\n') == 1 and '--rehearse' in done.stderr


def test_ci_gpu_runs_every_stage_and_fails_when_one_fails(tmp_path):
    # a stand-in python that claims a GPU and fails bench.py --quick: the script's control flow, without a GPU
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\necho "ran: $*"\ncase "$*" in *"bench.py --quick"*) exit 3;; esac\n')
    fake.chmod(0o755)
    done = ci_gpu(tmp_path, PYTHON=str(fake))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(".ci/gpu: FAILED: bench_polynorm (see")
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert '| bench_polynorm | **failed (exit 3)** |' in summary and '| bench_dense | passed |' in summary
    logs = tmp_path / 'scratch' / 'logs'
    data = tmp_path / 'scratch' / 'data_stdlib'
    assert f'ran: data/stdlib/prepare.py --out_dir={data}' in (logs / 'train_dense.log').read_text()
    train_moe = (logs / 'train_moe.log').read_text()
    assert f'--data_dir={data} --max_steps=30' in train_moe and 'config/moe_tiny.py --compile=False' in train_moe
    assert '--dtype=bfloat16' in train_moe and '--compile=True' in (logs / 'train_dense.log').read_text()
    assert {'test_kernels_norm.log', 'test_kernels_rest.log', 'test_gpu_inductor.log', 'test_gpu_rest.log'} <= {
        p.name for p in logs.iterdir()}
    assert "-k not inductor and not ci_gpu" in (logs / 'test_gpu_rest.log').read_text()


def test_ci_gpu_rehearsal_runs_every_stage_on_the_cpu(tmp_path):
    pytest.importorskip('triton', reason="the rehearsal runs the fused kernels in Triton's interpreter")
    done = ci_gpu(tmp_path, '--rehearse')
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == ['logs.tar.gz', 'summary.md']  # what a GPU job sends back
    summary = (out / 'summary.md').read_text()
    limits, _, _ = script_limits()
    for name, limit in limits.items():  # each limit parsed, and scaled by 4 for the CPU
        assert re.search(rf'^\| {name} \| passed \| \d+ \| {4 * limit} \|$', summary, re.M), name
    assert '| polynorm | fused |' in summary and summary.count('logged train losses') == 2
    with tarfile.open(out / 'logs.tar.gz') as tar:
        names = set(tar.getnames())
        report = json.load(tar.extractfile('logs/bench_polynorm.json'))
    assert {f'logs/{n}.log' for n in limits} <= names
    assert {f'logs/test_{n}.xml' for n in ('kernels_norm', 'kernels_rest', 'gpu_inductor', 'gpu_rest')} <= names
    assert {'logs/bench_dense.md', 'logs/bench_moe.json'} <= names
    assert report['environment']['command'].startswith('python bench.py --quick --out ')  # the GPU's command first
