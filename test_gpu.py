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


STAGES = ['wheels', 'bench_polynorm', 'bench_dense', 'tests', 'bench_moe', 'train_dense', 'train_fsdp', 'train_ddp',
          'train_moe']


def test_ci_gpu_stages_run_most_valuable_first_within_520_seconds():
    limits, grace, stages = script_limits()
    assert stages == STAGES
    assert re.search(r'^STAGES="(.*)"$', open(SCRIPT).read(), re.M).group(1).split() == STAGES  # what --stages takes
    assert list(limits) == ['preflight', *stages]  # every stage has a limit
    assert sum(limits.values()) + grace * len(limits) <= 520


def test_ci_gpu_without_a_gpu_says_so_in_one_line_and_in_the_summary(tmp_path):
    done = ci_gpu(tmp_path, CUDA_VISIBLE_DEVICES='')  # no GPU, even on a GPU machine
    assert done.returncode == 2
    assert done.stdout == '' and done.stderr.count('\n') == 1 and 'no CUDA GPU' in done.stderr
    summary = (tmp_path / 'out' / 'summary.md').read_text()  # what comes back from a GPU machine says why
    assert '| preflight | **failed**: torch sees no CUDA GPU' in summary and 'Key figures' not in summary


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


def test_ci_gpu_takes_python3_where_python_lacks_torch(tmp_path):
    folder = tmp_path / 'bin'
    folder.mkdir()
    (folder / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, no torch
    (folder / 'python').chmod(0o755)
    (folder / 'python3').symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    done = subprocess.run([SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, 'PATH': f'{folder}:/usr/bin:/bin', 'CUDA_VISIBLE_DEVICES': '',
                               'OUT': str(tmp_path / 'out'), 'SCRATCH': str(tmp_path / 'scratch')})
    assert done.returncode == 2 and 'no CUDA GPU' in done.stderr and str(folder / 'python3') in done.stderr


def test_ci_gpu_says_when_torch_does_not_import(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, so no torch
    fake.chmod(0o755)
    done = ci_gpu(tmp_path, PYTHON=str(fake))
    assert done.returncode == 2 and done.stderr.count('\n') == 1, done.stderr
    assert 'cannot import torch and triton' in done.stderr and 'set PYTHON' in done.stderr


@pytest.mark.parametrize('args', [['--fast'], ['--stages', 'bench,tests'], ['--stages']])
def test_ci_gpu_refuses_an_unknown_argument_or_stage(tmp_path, args):
    done = ci_gpu(tmp_path, *args)
    assert done.returncode == 2 and done.stderr.count('\n') == 1 and '--rehearse' in done.stderr
    assert 'train_fsdp' in done.stderr  # the stages it knows


def stand_in_python(tmp_path, script=''):
    """A stand-in python that claims a GPU, echoes its arguments, resumes when asked, and runs `script` (bash)."""
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\necho "ran: $*"\n'
                    'case "$*" in *init_from=resume*) echo "resumed from ckpt at step 4";; esac\n' + script)
    fake.chmod(0o755)
    return str(fake)


def test_ci_gpu_runs_every_stage_and_fails_when_one_fails(tmp_path):
    # a stand-in python that claims a GPU and fails bench.py --quick: the script's control flow, without a GPU
    fake = stand_in_python(tmp_path, 'case "$*" in *"bench.py --quick"*) exit 3;; esac\n')
    done = ci_gpu(tmp_path, PYTHON=fake)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f".ci/gpu: FAILED: bench_polynorm (see {tmp_path}/out/summary.md and {tmp_path}/out/logs.tar.gz; rerun them "
        "alone with .ci/gpu --stages bench_polynorm)")
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    verdicts = re.findall(r'^\| (\w+) \| (passed|\*\*failed \(exit 3\)\*\*) \|', summary, re.M)
    assert verdicts == [('preflight', 'passed'), ('wheels', 'passed'), ('bench_polynorm', '**failed (exit 3)**'),
                        *[(name, 'passed') for name in STAGES[2:]]]
    assert '`.ci/gpu --stages bench_polynorm`' in summary
    logs = tmp_path / 'scratch' / 'logs'
    data = tmp_path / 'scratch' / 'data_stdlib'
    assert f'ran: data/stdlib/prepare.py --out_dir={data}' in (logs / 'train_dense.log').read_text()
    train_moe = (logs / 'train_moe.log').read_text()
    assert f'--data_dir={data} --max_steps=30' in train_moe and 'config/moe_tiny.py --compile=False' in train_moe
    assert '--dtype=bfloat16' in train_moe and '--compile=True' in (logs / 'train_dense.log').read_text()
    for name in ('train_fsdp', 'train_ddp'):  # one process under torchrun, stopped with a checkpoint, resumed
        log = (logs / f'{name}.log').read_text()
        assert log.count('ran: -m torch.distributed.run --standalone --nproc_per_node=1 train.py') == 2
        assert '--stop_step=4' in log and '--init_from=resume' in log and '--compile=True' in log
        assert ('--fsdp=True' in log) == (name == 'train_fsdp')
    names = {p.name for p in logs.iterdir()}
    assert {'test_kernels_norm.log', 'test_kernels_rest.log', 'test_gpu_inductor.log', 'test_gpu_rest.log',
            'test_gpu_timing.log'} <= names
    assert "-k not inductor and not ci_gpu and not cuda_timing" in (logs / 'test_gpu_rest.log').read_text()
    assert "-k cuda_timing and not ci_gpu" in (logs / 'test_gpu_timing.log').read_text()
    # the timing tests start after the other four pytest processes have ended
    assert all((logs / 'test_gpu_timing.log').stat().st_mtime >= (logs / f'{n}.log').stat().st_mtime
               for n in ('test_kernels_norm', 'test_kernels_rest', 'test_gpu_inductor', 'test_gpu_rest'))


def test_ci_gpu_reruns_only_the_stages_asked_for(tmp_path):
    done = ci_gpu(tmp_path, '--stages', 'train_ddp,tests', PYTHON=stand_in_python(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert re.findall(r'^\| (\w+) \| passed \|', summary, re.M) == ['preflight', 'wheels', 'tests', 'train_ddp']
    assert summary.startswith('# .ci/gpu --stages train_ddp,tests: ')


def test_ci_gpu_stopped_mid_stage_keeps_its_summary(tmp_path):
    # TERM to the script while a stage runs (as when the call is cut short): the stage is stopped and the
    # summary says so
    env = {**os.environ, 'OUT': str(tmp_path / 'out'), 'SCRATCH': str(tmp_path / 'scratch'),
           'WHEEL_DIRS': str(tmp_path / 'wheels'),
           'PYTHON': stand_in_python(tmp_path, 'case "$*" in *"bench.py --quick"*) sleep 60;; esac\n')}
    run = subprocess.Popen([SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in run.stdout:
        if line.startswith('ran: bench.py --quick'):
            run.terminate()
            break
    assert run.wait(timeout=20) == 1
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert '**The call was stopped by TERM during bench_polynorm.**' in summary
    assert '| bench_polynorm | **stopped: the call was stopped by TERM** |' in summary
    assert '| bench_dense |' not in summary and '--stages bench_polynorm' in summary


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
    # the key figures: PolyNorm against the copy, Liger's absence explained, each training stage's speed
    assert '| fused | 4 x 32 |' in summary and "**Liger's column is missing**" in summary
    assert 'pip download --no-deps liger-kernel==0.8.5 -d wheels/' in summary
    assert 'bench_dense: 1 layers x 128' in summary and '| relu2 (eager) |' in summary
    assert summary.count('logged train losses') == 4 and summary.count('tokens/s, MFU') == 4
    # a bench stage stopped mid-way: its first variant timed, its table and the summary kept
    assert re.search(r'^\| bench_cut \| passed \|', summary, re.M)
    assert '## bench_cut' in summary and '**Stopped by SIGTERM after' in summary
    with tarfile.open(out / 'logs.tar.gz') as tar:
        names = set(tar.getnames())
        report = json.load(tar.extractfile('logs/bench_polynorm.json'))
        cut = json.load(tar.extractfile('logs/bench_cut.json'))
        fsdp = tar.extractfile('logs/train_fsdp.log').read().decode()
    assert {f'logs/{n}.log' for n in limits} <= names
    assert {f'logs/test_{n}.xml' for n in ('kernels_norm', 'kernels_rest', 'gpu_inductor', 'gpu_rest',
                                           'gpu_timing')} <= names
    assert {'logs/bench_dense.md', 'logs/bench_moe.json'} <= names
    assert report['environment']['command'].startswith('python bench.py --quick --out ')  # the GPU's command first
    assert cut['stopped'] == 'SIGTERM' and 'step_ms' in cut['model']['runs'][0]
    assert 'resumed from' in fsdp and 'at step 4' in fsdp
