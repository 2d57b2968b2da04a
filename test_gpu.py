"""
The CUDA paths, checked on a GPU: the Triton kernels compiled for it (not interpreted) against float64, the fused
op inside the model and under inductor's fullgraph compile, the MoE's grouped GEMM against its loop in bf16, flash
attention under autocast, and bench.py's CUDA timing. Without CUDA these tests skip, saying so; .ci/gpu runs them
on a GPU. The last tests check .ci/gpu itself, and run anywhere.
Run: python -m pytest -q test_gpu.py
"""

import os
import stat
import subprocess
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
    kernels = pytest.importorskip('kernels')
    assert not kernels.INTERPRETED, "TRITON_INTERPRET=1 is set: the kernels would not be compiled for the GPU"


@cuda
@pytest.mark.parametrize('width', [1536, 4096, 8256, 16384])  # one tile; one tile exactly; 2048-wide tiles + tail
@pytest.mark.parametrize('op', ['polynorm', 'polyrelu'])
def test_fused_matches_float64_at_the_model_widths(op, width):
    kernels = pytest.importorskip('kernels', reason="kernels.py needs Triton")
    torch.manual_seed(0)
    plain, fused = {'polynorm': (model.poly_norm, kernels.poly_norm_fused),
                    'polyrelu': (model.poly_relu, kernels.poly_relu_fused)}[op]
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
# .ci/gpu itself (runs anywhere)


def test_ci_gpu_is_an_executable_bash_script_that_parses():
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR
    done = subprocess.run(['bash', '-n', SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ci_gpu_stage_limits_sum_under_ten_minutes():
    limits = [int(line.split()[2]) for line in open(SCRIPT) if line.startswith('stage ')]
    assert len(limits) >= 8 and sum(limits) < 600


def test_ci_gpu_without_a_gpu_says_so_in_one_line(tmp_path):
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'OUT': str(tmp_path / 'out')}  # no GPU, even on a GPU machine
    done = subprocess.run([SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stdout == '' and done.stderr.count('\n') == 1 and 'no CUDA GPU' in done.stderr
    assert not (tmp_path / 'out').exists()


def test_ci_gpu_runs_every_stage_and_fails_when_one_fails(tmp_path):
    # a stand-in python that claims a GPU and fails bench.py --quick: the script's control flow, without a GPU
    fake = tmp_path / 'python'
    fake.write_text('#!/usr/bin/env bash\necho "ran: $*"\ncase "$*" in *"bench.py --quick"*) exit 3;; esac\n')
    fake.chmod(0o755)
    out = tmp_path / 'out'
    env = {**os.environ, 'PYTHON': str(fake), 'OUT': str(out)}
    done = subprocess.run([SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(".ci/gpu: FAILED: bench_quick (exit 3)")
    logs = {p.name for p in out.iterdir()}
    assert {'versions.log', 'tests.log', 'bench_quick.log', 'bench_dense_1b.log', 'bench_moe.log',
            'train_dense.log', 'train_moe.log'} <= logs
    assert f'ran: data/stdlib/prepare.py --out_dir={out}/data_stdlib' in (out / 'train_dense.log').read_text()
    assert f'ran: train.py config/moe_tiny.py --dataset=stdlib --data_dir={out}/data_stdlib --max_steps=30' in (
        out / 'train_moe.log').read_text()
    assert '--compile=True --dtype=bfloat16' in (out / 'train_dense.log').read_text()
    assert f'--out {out}/bench_dense_1b' in (out / 'bench_dense_1b.log').read_text()
