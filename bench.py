"""
What do PolyNorm and PolyReLU cost? This file times them next to ReLU, GELU, ReLU^2 and SwiGLU.

    python bench.py                     every activation and implementation at the paper's FFN shapes, in bf16
    python bench.py --quick             one shape and fewer repeats: a quick look
    python bench.py --model config/dense_1b.py --n_layer 4      whole training steps, one per activation

The activation suite reports, for each (activation, implementation, shape):
  - forward and forward+backward time: the median of --repeats timed runs after a warm-up (CUDA events on a GPU,
    time.perf_counter on a CPU). The inputs rotate over enough buffers to exceed 4x the GPU's L2 cache, so every
    run reads them from memory, as an FFN activation does in training.
  - effective bandwidth: the bytes the activation cannot avoid moving (forward: read x, write y; backward: read
    x and dy, write dx; SwiGLU reads two inputs) over the time, as a share of a y.copy_(x) measured in the same run.
  - saved for backward: the bytes of the tensors autograd keeps between forward and backward, counted with
    saved_tensors_hooks (exact and the same on any device: the activation memory a model pays per layer).
  - peak extra (CUDA only): the most memory one forward+backward allocates, saved tensors and temporaries together.
Implementations: eager (the plain PyTorch code of model.py), ckpt (PolyCom with activation checkpointing, as
model.py trains it), compile (torch.compile of the plain code), fused (the Triton kernels of kernels.py, on CUDA),
liger (Liger-Kernel's PolyNorm, when liger_kernel is installed). Each is checked against eager before it is timed.
Then the activation's share of one whole FFN (up projection, activation, down projection, forward+backward) is
set next to its share of the FFN's FLOPs, counted from the formulas (see flops_per_token below).

The model suite (--model) times forward+backward+AdamW steps of a config with each activation at matched
parameters (only `activation` changes), and for MoE configs the grouped-GEMM experts against the reference loop.

Both write <out>.md (the table, ready for the README) and <out>.json (every raw figure and the environment).
On a CPU the defaults shrink to small shapes in float32, and every table says that its figures are CPU figures.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from functools import partial

import torch
import torch.nn.functional as F

import model
from common import cpu_name, peak_flops
from data.shards import atomic_write
from model import FFN, GPT, GPTConfig, make_activation, swiglu_width

ACTIVATIONS = ('relu', 'gelu', 'relu2', 'swiglu', 'polyrelu', 'polynorm')
IMPLS = ('eager', 'ckpt', 'compile', 'fused', 'liger')
DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': torch.float32}

# Defaults per device. GPU: the FFN widths of the paper's models (the non-gated width: 4096; 8256 is the dense 1B,
# whose SwiGLU runs 5504; 16384) at 8192 and 16384 tokens. CPU: small shapes, so the suite takes well under a
# minute on 2 cores, in float32 since CPUs without bf16 units emulate bf16 matmuls slowly; torch.compile is left
# out there, as inductor's C++ build of every graph takes about a minute on 2 cores (add it with --impls). One
# thread: shapes this small gain little from more, and a thread descheduled by other work on a shared machine
# stalls every op that waits for it, which turned medians of 0.1 ms into 10 ms here.
DEFAULTS = {
    'cuda': dict(rows=[8192, 16384], widths=[4096, 8256, 16384], repeats=50, dtype='bfloat16', ffn_embd=2048,
                 impls=list(IMPLS), steps=10, threads=torch.get_num_threads()),
    'cpu': dict(rows=[256], widths=[512, 1024], repeats=20, dtype='float32', ffn_embd=512,
                impls=['eager', 'ckpt', 'fused', 'liger'], steps=3, threads=1),
}
QUICK = {'cuda': dict(rows=[16384], widths=[8256], repeats=20, steps=5),
         'cpu': dict(rows=[64], widths=[256], repeats=5, steps=2)}
WARMUP = 3  # untimed runs before timing: they compile, autotune and fill the caching allocator
MAX_BUFFERS = 64  # rotation cap: tiny shapes sit in cache whatever we do
CPU_CACHE_BYTES = 32 * 2**20  # a typical last-level cache; CUDA devices report theirs

# -----------------------------------------------------------------------------
# 1. Command line


def parse_args(argv):
    p = argparse.ArgumentParser(prog='bench.py', description="Time the PolyCom activations against the usual ones.")
    p.add_argument('--device', choices=['cuda', 'cpu'], default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--rows', type=int, nargs='+', help="tokens per call (the rows of the FFN activation)")
    p.add_argument('--widths', type=int, nargs='+',
                   help="FFN hidden sizes, as ffn_hidden in a config; SwiGLU runs 2/3 of each, on two inputs")
    p.add_argument('--activations', nargs='+', default=list(ACTIVATIONS), help=f"any of {', '.join(ACTIVATIONS)}")
    p.add_argument('--impls', nargs='+', help=f"any of {', '.join(IMPLS)}")
    p.add_argument('--order', type=int, default=3, help="the PolyCom order r")
    p.add_argument('--dtype', choices=list(DTYPES), help="bfloat16 on a GPU, float32 on a CPU by default")
    p.add_argument('--repeats', type=int, help="timed runs per figure (the median is reported)")
    p.add_argument('--threads', type=int, help="CPU threads for torch (1 on a CPU run, so timings stay steady)")
    p.add_argument('--ffn_embd', type=int, help="n_embd of the FFN whose share the activation is (2048 on a GPU)")
    p.add_argument('--out', help="prefix of the .md and .json written (default out/bench or out/bench_<config>)")
    p.add_argument('--quick', action='store_true', help="one shape, fewer repeats or steps")
    p.add_argument('--model', help="a config file: time whole training steps instead of the activations alone")
    p.add_argument('--n_layer', type=int, help="with --model: keep this many layers, so a big model runs fast")
    p.add_argument('--batch_size', type=int, help="with --model: sequences per step (the config's micro_batch_size)")
    p.add_argument('--block_size', type=int, help="with --model: tokens per sequence (the config's block_size)")
    p.add_argument('--steps', type=int, help="with --model: timed training steps")
    p.add_argument('--compile', action=argparse.BooleanOptionalAction,
                   help="with --model: torch.compile the model (default: on CUDA only)")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """Fill the device's defaults and reject what cannot run, saying how to fix it (p.error exits)."""
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error("--device cuda, but this torch sees no CUDA device; run with --device cpu")
    defaults = {**DEFAULTS[args.device], **(QUICK[args.device] if args.quick else {})}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ('rows', 'widths'):
        if any(n < 1 for n in getattr(args, name)):
            p.error(f"--{name} must be positive integers, got {getattr(args, name)}")
    for name in ('repeats', 'threads', 'ffn_embd', 'steps', 'n_layer', 'batch_size', 'block_size'):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    for name, allowed in (('activations', ACTIVATIONS), ('impls', IMPLS)):
        wrong = [a for a in getattr(args, name) if a not in allowed]
        if wrong:
            p.error(f"--{name}: {', '.join(wrong)} not known; choose from {', '.join(allowed)}")
    if not 1 <= args.order <= 8:
        p.error(f"--order must be between 1 and 8, got {args.order}")
    if args.model is not None and not os.path.isfile(args.model):
        p.error(f"--model {args.model}: no such file; give a config file such as config/dense_1b.py")
    if args.model is None and any(getattr(args, n) is not None for n in ('n_layer', 'batch_size', 'block_size')):
        p.error("--n_layer, --batch_size and --block_size go with --model config/<name>.py")
    if args.compile is None:
        args.compile = args.device == 'cuda'
    if args.out is None:
        stem = os.path.splitext(os.path.basename(args.model))[0] if args.model else None
        args.out = os.path.join('out', f'bench_{stem}' if stem else 'bench')


# -----------------------------------------------------------------------------
# 2. Timing and memory


def measure(run, n_buffers, repeats, device):
    """Median milliseconds of run(i) over `repeats` calls after WARMUP untimed ones, i cycling over the buffers."""
    for i in range(WARMUP):
        run(i % n_buffers)
    calls = [(WARMUP + i) % n_buffers for i in range(repeats)]
    if device.type == 'cuda':
        # events time the GPU's own work; the host only queues it, so host timers would measure the queueing
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in calls]
        torch.cuda.synchronize(device)
        for i, (start, end) in zip(calls, events):
            start.record()
            run(i)
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for i in calls:
            t0 = time.perf_counter()
            run(i)
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def saved_bytes(forward, inputs, params):
    """Bytes of the distinct tensors autograd keeps for backward after forward(*inputs), parameters not counted.
    Tensors that share memory (x saved by three ops, a view of it) count once."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(*inputs)
    return sum(kept.values())


def peak_extra_bytes(run, device):
    """The most memory one run(0) allocates on top of what is already allocated (CUDA only; None on a CPU)."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run(0)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cache_bytes(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).L2_cache_size
    return CPU_CACHE_BYTES


def copy_bandwidth(dtype, repeats, device):
    """GB/s of y.copy_(x) on a buffer far bigger than the cache: the memory roofline of this device."""
    n_bytes = 2**30 if device.type == 'cuda' else 2**26
    x = torch.randn(n_bytes // dtype.itemsize, dtype=dtype, device=device)
    y = torch.empty_like(x)
    ms = measure(lambda i: y.copy_(x), 1, repeats, device)
    return 2 * x.nbytes / ms / 1e6  # read x, write y


def make_buffers(n_inputs, shape, dtype, device):
    """Sets of (inputs, dy), enough that cycling through them moves 4x the cache, so none is read from cache."""
    set_bytes = (n_inputs + 1) * math.prod(shape) * dtype.itemsize
    n = min(MAX_BUFFERS, max(2, math.ceil(4 * cache_bytes(device) / set_bytes)))
    return [([torch.randn(shape, dtype=dtype, device=device, requires_grad=True) for _ in range(n_inputs)],
             torch.randn(shape, dtype=dtype, device=device)) for _ in range(n)]


# -----------------------------------------------------------------------------
# 3. Cost models: the bytes an activation must move, the FLOPs it does


def act_width(activation, hidden):
    """The width the activation runs at: SwiGLU takes 2/3 of the FFN hidden size (model.py's parameter match)."""
    return swiglu_width(hidden) if activation == 'swiglu' else hidden


def n_inputs(activation):
    return 2 if activation == 'swiglu' else 1  # SwiGLU multiplies silu(gate) by up


def bytes_moved(activation, rows, width, itemsize):
    """The least traffic of one call, (forward, forward+backward) bytes: forward reads the inputs and writes y,
    backward reads the inputs and dy and writes their gradients. The r+1 PolyCom scalars are left out."""
    numel, k = rows * width, n_inputs(activation)
    forward = (k + 1) * numel * itemsize
    backward = (2 * k + 1) * numel * itemsize
    return forward, forward + backward


def forward_flops_per_element(activation, order):
    """Arithmetic operations per element of the activation's input in the forward, counted from the formulas of
    model.py; a max, multiply, add, divide, exp, erf or rsqrt counts one. Per-row work (PolyNorm's r rsqrt) is
    left out: it is 1/width of the rest."""
    r = order
    return {'relu': 1,  # max(x, 0)
            'gelu': 5,  # x / sqrt(2), erf, + 1, * x, * 0.5
            'relu2': 2,  # max, square
            'swiglu': 5,  # silu(g) * u = g / (1 + exp(-g)) * u: negate, exp, add, divide, multiply
            'polyrelu': 3 * r,  # relu, r-1 powers, r weights, r adds (the bias included)
            'polynorm': 6 * r - 1,  # r-1 powers; per power square, row-sum add, scale by rsqrt; r weights, r adds
            }[activation]


def flops_per_token(activation, n_embd, hidden, order):
    """Training FLOPs per token of one FFN, (matmuls, activation). Matmuls: 2 per multiply-add, times 3 for
    forward+backward, over the FFN's weights (2 matrices of n_embd x hidden, or SwiGLU's 3 of 2/3 the width).
    The activation: its forward count per element times the width, times the same 3, i.e. backward taken as
    twice the forward, a rough count that cannot move a share this small."""
    width = act_width(activation, hidden)
    n_matrices = 3 if activation == 'swiglu' else 2
    matmul = 6 * n_matrices * n_embd * width
    act = 3 * forward_flops_per_element(activation, order) * width
    return matmul, act


# -----------------------------------------------------------------------------
# 4. The implementations under test


def swiglu(gate, up):  # as in model.FFN: silu(gate(x)) * up(x)
    return F.silu(gate) * up


def applies(activation, impl):
    """Whether the implementation exists for the activation at all (no table row otherwise)."""
    poly = activation in ('polyrelu', 'polynorm')
    return {'eager': True, 'compile': True, 'ckpt': poly, 'fused': poly, 'liger': activation == 'polynorm'}[impl]


def triton_runs_on(device):
    # Triton kernels need CUDA tensors, or its CPU interpreter (TRITON_INTERPRET=1, for tests: slow, not timing)
    return device.type == 'cuda' or os.environ.get('TRITON_INTERPRET') == '1'


def liger_poly_norm_class():
    try:  # the module itself, not liger_kernel.transformers, whose __init__ may pull in `transformers`
        from liger_kernel.transformers.poly_norm import LigerPolyNorm
        return LigerPolyNorm
    except ImportError:
        return None


def unavailable(activation, impl, order, device):
    """Why an implementation that applies cannot run here, or None when it can."""
    if impl == 'fused':
        if model.poly_norm_fused is None:
            return "kernels.py did not import (it needs Triton: pip install triton)"
        if not triton_runs_on(device):
            return "the Triton kernels need a CUDA device"
    if impl == 'liger':
        if liger_poly_norm_class() is None:
            return "liger_kernel is not installed (pip install liger-kernel)"
        if device.type != 'cuda':
            return "Liger's kernels need a CUDA device (they do not run in Triton's CPU interpreter)"
        if order != 3:
            return f"Liger's PolyNorm is order 3 only, got --order {order}"
    return None


def poly_coefficients(order):
    """Unequal PolyCom coefficients, set in every implementation, so that a mixed-up weight order shows in the
    check against eager (model.py's initial 1/r each would hide it)."""
    return torch.arange(1, order + 1, dtype=torch.float32) / order, torch.tensor([0.1])


def build(activation, impl, order, device):
    """(forward, params): forward(*inputs) -> y computes the activation the way `impl` does."""
    if activation == 'swiglu':
        forward, params = swiglu, []
    else:
        cfg = GPTConfig(activation=activation, poly_order=order, act_checkpointing=impl == 'ckpt', act_impl='plain')
        act = make_activation(cfg).to(device)
        params = list(act.parameters())
        if params:
            weight, bias = poly_coefficients(order)
            with torch.no_grad():
                act.weight.copy_(weight)
                act.bias.copy_(bias)
        forward = act
        # the kernels are called directly: PolyNorm and PolyReLU pick them for CUDA tensors only
        if impl == 'fused' and activation == 'polynorm':
            forward = partial(model.poly_norm_fused, weight=act.weight, bias=act.bias, eps=act.eps)
        elif impl == 'fused':
            forward = partial(model.poly_relu_fused, weight=act.weight, bias=act.bias)
        elif impl == 'liger':
            forward = liger_poly_norm(act)
            params = list(forward.parameters())
    if impl == 'compile':
        torch._dynamo.reset()  # a fresh cache per shape: past the recompile limit, dynamo falls back to eager
        forward = torch.compile(forward)
    return forward, params


def liger_poly_norm(act):
    """Liger's PolyNorm holding the same coefficients as `act`, a model.PolyNorm."""
    # in_place=False: Liger writes dx into dy otherwise, and the timed runs reuse each dy buffer
    liger = liger_poly_norm_class()(eps=act.eps, in_place=False).to(act.weight.device)
    with torch.no_grad():
        liger.weight.copy_(act.weight.flip(0))  # Liger's weight[0] goes with x**3, model.py's with x
        liger.bias.copy_(act.bias.view_as(liger.bias))  # a scalar there, shape (1,) here
    return liger


def relative_diff(a, b):
    """max |a - b| / max |b|: how far an implementation lands from eager, on the scale of the values."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def diff_from_eager(forward, reference, inputs, dy):
    """The largest relative difference from the eager reference, in y and in the input gradients."""
    out, ref = [], []
    for f, results in ((forward, out), (reference, ref)):
        y = f(*inputs)
        results.extend([y.detach(), *torch.autograd.grad(y, inputs, dy)])
    return max(relative_diff(a, b) for a, b in zip(out, ref))


# -----------------------------------------------------------------------------
# 5. The activation suite


def bench_activation(activation, impl, rows, hidden, reference, buffers, args, device, copy_GBps):
    """Time, bandwidth and memory of one implementation at one shape (a table row)."""
    dtype = DTYPES[args.dtype]
    width = act_width(activation, hidden)
    forward, params = build(activation, impl, args.order, device)
    row = dict(n_inputs=n_inputs(activation), dtype=args.dtype, buffers=len(buffers), repeats=args.repeats)
    inputs, dy = buffers[0]
    row['diff_vs_eager'] = diff_from_eager(forward, reference, inputs, dy)
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if row['diff_vs_eager'] > tolerance:
        row['error'] = f"output differs from eager by {row['diff_vs_eager']:.2e} (tolerance {tolerance}): not timed"
        return row

    def fwd(i):  # a training forward: autograd records the graph and keeps what backward needs
        forward(*buffers[i][0])

    def fwd_bwd(i):
        inputs, dy = buffers[i]
        torch.autograd.grad(forward(*inputs), [*inputs, *params], dy)

    row['fwd_ms'] = measure(fwd, len(buffers), args.repeats, device)
    row['fwd_bwd_ms'] = measure(fwd_bwd, len(buffers), args.repeats, device)
    row['fwd_bytes'], row['fwd_bwd_bytes'] = bytes_moved(activation, rows, width, dtype.itemsize)
    for phase in ('fwd', 'fwd_bwd'):
        row[f'{phase}_GBps'] = row[f'{phase}_bytes'] / row[f'{phase}_ms'] / 1e6
        row[f'{phase}_roofline'] = row[f'{phase}_GBps'] / copy_GBps
    row['input_bytes'] = n_inputs(activation) * rows * width * dtype.itemsize
    row['saved_bytes'] = saved_bytes(forward, inputs, params)
    row['peak_extra_bytes'] = peak_extra_bytes(fwd_bwd, device)
    return row


def bench_ffn(activation, rows, hidden, args, device):
    """The activation's share of one FFN's forward+backward, with the activation as model.py runs it by default
    (its fused kernel on CUDA when kernels.py imports, else checkpointed PolyCom), next to its share of FLOPs."""
    dtype = DTYPES[args.dtype]
    cfg = GPTConfig(n_embd=args.ffn_embd, n_head=1, ffn_hidden=hidden, activation=activation,
                    poly_order=args.order)
    ffn = FFN(cfg).to(device)  # float32 weights, matmuls in args.dtype under autocast: as in training
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    width = act_width(activation, hidden)
    act = swiglu if ffn.act is None else ffn.act
    act_params = list(ffn.act.parameters()) if ffn.act is not None else []

    def timed(forward, params, k, shape):
        buffers = make_buffers(k, shape, dtype, device)

        def fwd_bwd(i):
            inputs, dy = buffers[i]
            with autocast:
                y = forward(*inputs)
            torch.autograd.grad(y, [*inputs, *params], dy)
        return measure(fwd_bwd, len(buffers), args.repeats, device)

    ffn_ms = timed(lambda h: ffn(h)[0], list(ffn.parameters()), 1, (rows, args.ffn_embd))
    act_ms = timed(act, act_params, n_inputs(activation), (rows, width))
    matmul_flops, act_flops = flops_per_token(activation, args.ffn_embd, hidden, args.order)
    return dict(width=width, n_embd=args.ffn_embd, ffn_ms=ffn_ms, act_ms=act_ms, time_share=act_ms / ffn_ms,
                matmul_flops_per_token=matmul_flops, act_flops_per_token=act_flops,
                flops_share=act_flops / (matmul_flops + act_flops))


def guarded(label, fn, *args):
    """Run one measurement; a failure (out of memory, a compile error) is recorded and the suite goes on,
    since one broken row should not cost the rest of a GPU run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 -- reported in the row and on the console, not hidden
        detail = f"{type(e).__name__}: {e}".strip()  # torch.compile's first line rarely says what went wrong
        log(f"  {label}: FAILED {detail[:2000]}")
        return {'error': detail.splitlines()[0], 'error_detail': detail}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_activations(args, device):
    dtype = DTYPES[args.dtype]
    copy_GBps = copy_bandwidth(dtype, args.repeats, device)
    log(f"copy bandwidth: {copy_GBps:.0f} GB/s")
    runnable, notes = {}, []  # activation -> the implementations to time; notes: those that cannot run here
    for activation in args.activations:
        runnable[activation] = []
        for impl in [i for i in args.impls if applies(activation, i)]:
            reason = unavailable(activation, impl, args.order, device)
            if reason:
                notes.append(f"{activation} {impl}: not run, {reason}")
            else:
                runnable[activation].append(impl)
    results = []
    for rows in args.rows:
        for hidden in args.widths:
            for activation in [a for a in args.activations if runnable[a]]:
                shape = (rows, act_width(activation, hidden))
                buffers = make_buffers(n_inputs(activation), shape, dtype, device)
                reference, _ = build(activation, 'eager', args.order, device)
                for impl in runnable[activation]:
                    label = f"{activation} {impl} {rows}x{shape[1]}"
                    row = guarded(label, bench_activation, activation, impl, rows, hidden, reference, buffers,
                                  args, device, copy_GBps)
                    row = {'activation': activation, 'impl': impl, 'rows': rows, 'hidden': hidden,
                           'width': shape[1], **row}
                    results.append(row)
                    log(f"  {label}: " + (row.get('error') or
                                          f"fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwd_bwd_ms']:.3f} ms, "
                                          f"saved {fmt_bytes(row['saved_bytes'])}"))
                del buffers
    ffn = []
    rows = max(args.rows)  # the share hardly depends on the token count: one row count is enough
    for hidden in args.widths:
        for activation in args.activations:
            label = f"FFN {activation} {rows}x{hidden}"
            row = {'activation': activation, 'rows': rows, 'hidden': hidden,
                   **guarded(label, bench_ffn, activation, rows, hidden, args, device)}
            ffn.append(row)
            log(f"  {label}: " + (row.get('error') or
                                  f"FFN {row['ffn_ms']:.3f} ms, activation {100 * row['time_share']:.1f} %"))
    return {'copy_GBps': copy_GBps, 'activations': results, 'ffn': ffn, 'notes': notes}


# -----------------------------------------------------------------------------
# 6. The model suite: whole training steps


def bench_training(cfg, batch_size, compile_mode, args, device):
    """Step time, throughput, MFU and peak memory of forward + backward + AdamW step on random tokens."""
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    gpt = GPT(cfg).to(device)
    optimizer = torch.optim.AdamW(gpt.optim_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=device.type == 'cuda')
    torch._dynamo.reset()  # one GPT code object serves every variant: start each from an empty compile cache
    step_model = gpt
    if compile_mode != 'eager':
        step_model = torch.compile(gpt, fullgraph=compile_mode == 'compiled, fullgraph')
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    tokens = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]  # one fixed batch: the step is timed, not the data loading

    def step(_):
        with autocast:
            _, losses = step_model(x, y)
        losses['loss'].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    ms = measure(step, 1, args.steps, device)
    n = gpt.num_params()
    tokens_per_s = batch_size * cfg.block_size / (ms / 1e3)
    flops = gpt.flops_per_token(cfg.block_size)
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == 'cuda' else None
    return dict(step_ms=ms, tokens_per_s=tokens_per_s, flops_per_token=flops,
                mfu=flops * tokens_per_s / peak if peak else None,
                peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None,
                params_total=n['total'], params_active=n['active'])


def run_model(args, device):
    config = model.read_config(args.model)
    overrides = {k: getattr(args, k) for k in ('n_layer', 'block_size') if getattr(args, k) is not None}
    batch_size = args.batch_size or config.get('micro_batch_size', 1)
    moe = config.get('n_experts', 0) > 0
    if moe:
        # the grouped path is one graph (fullgraph); the loop's data-dependent shapes break the graph at every
        # expert and recompile as the token counts change, so it runs eager, next to an eager grouped run
        variants = ([('grouped', 'compiled, fullgraph'), ('grouped', 'eager')] if args.compile else
                    [('grouped', 'eager')]) + [('loop', 'eager')]
    else:
        variants = [(None, 'compiled' if args.compile else 'eager')]  # as train.py compiles
    results = []
    for activation in args.activations:
        for moe_impl, compile_mode in variants:
            extra = {'moe_impl': moe_impl} if moe_impl else {}
            cfg = model.config_from_file(args.model, **overrides, activation=activation, **extra)
            label = f"{activation}" + (f" {moe_impl}" if moe_impl else '') + f" ({compile_mode})"
            row = {'activation': activation, 'moe_impl': moe_impl, 'compile': compile_mode,
                   'n_layer': cfg.n_layer, 'n_embd': cfg.n_embd, 'block_size': cfg.block_size,
                   'batch_size': batch_size, 'dtype': args.dtype, 'steps': args.steps,
                   **guarded(label, bench_training, cfg, batch_size, compile_mode, args, device)}
            results.append(row)
            log(f"  {label}: " + (row.get('error') or
                                  f"{row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s"))
    return {'config': args.model, 'moe': moe, 'runs': results}


# -----------------------------------------------------------------------------
# 7. The report


def log(message):
    print(message, flush=True)


def fmt_GBps(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def fmt_bytes(n):
    if n is None:
        return 'n/a'
    for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def environment(device, argv):
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    liger = liger_poly_norm_class()
    return {'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else f"CPU: {cpu_name()}",
            'cpu': cpu_name(), 'cpu_threads': torch.get_num_threads(), 'torch': torch.__version__,
            'triton': triton_version, 'cuda': torch.version.cuda, 'python': platform.python_version(),
            'liger_kernel': liger is not None, 'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'command': ' '.join(['python', 'bench.py', *(sys.argv[1:] if argv is None else argv)])}


def header(title, env, device):
    lines = [f"### {title}", '',
             f"{env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; {env['date']}",
             f"`{env['command']}`", '']
    if device.type != 'cuda':
        lines += [f"**CPU figures** (torch threads: {env['cpu_threads']}, timed with time.perf_counter): they rank the "
                  "implementations on this CPU and say nothing of a GPU. Small shapes stay partly in the CPU's "
                  "caches, so GB/s can pass the copy roofline. Peak memory is n/a on a CPU; the saved-for-backward "
                  "column is exact on any device.", '']
    return lines


def table(columns, rows):
    return [f"| {' | '.join(columns)} |", f"|{'|'.join('---' for _ in columns)}|",
            *(f"| {' | '.join(row)} |" for row in rows)]


def shape_text(r):
    return f"{r['rows']} x {r['width']}" + (' (x2)' if r['activation'] == 'swiglu' else '')


def activations_markdown(report, args, device):
    env, act = report['environment'], report['activations']
    lines = header(f"Activation cost, {args.dtype}", env, device)
    lines += [f"Copy bandwidth (the roofline): {fmt_GBps(act['copy_GBps'])} GB/s. Median of {args.repeats} runs; "
              "GB/s counts the bytes that must move (inputs and y forward; inputs, dy and dx backward). "
              "SwiGLU runs 2/3 of the width on two inputs (same parameters).", '']
    rows = []
    for r in act['activations']:
        if 'error' in r:
            rows.append([r['activation'], r['impl'], shape_text(r), f"failed: {r['error']}", *[''] * 5])
            continue
        rows.append([r['activation'], r['impl'], shape_text(r), f"{r['fwd_ms']:.3f}", f"{r['fwd_bwd_ms']:.3f}",
                     f"{fmt_GBps(r['fwd_GBps'])} ({100 * r['fwd_roofline']:.0f} %)",
                     f"{fmt_GBps(r['fwd_bwd_GBps'])} ({100 * r['fwd_bwd_roofline']:.0f} %)",
                     f"{fmt_bytes(r['saved_bytes'])} ({r['saved_bytes'] / r['input_bytes']:.1f}x)",
                     fmt_bytes(r['peak_extra_bytes'])])
    lines += table(['activation', 'impl', 'tokens x width', 'fwd ms', 'fwd+bwd ms', 'fwd GB/s (roofline)',
                    'fwd+bwd GB/s (roofline)', 'saved for bwd (x input)', 'peak extra'], rows)
    lines += [''] + [f"- {note}" for note in act['notes']] + ([''] if act['notes'] else [])
    lines += [f"#### Share of one FFN (n_embd {args.ffn_embd}, forward+backward)", '',
              "The activation as model.py runs it by default (fused kernel on CUDA when available, else "
              "checkpointed PolyCom), timed alone and inside up projection + activation + down projection. "
              "FLOPs counted from the formulas: matmuls 6 x n_embd x width per matrix per token; the "
              "activation 3 x its forward operations per element (see flops_per_token in bench.py).", '']
    rows = []
    for r in act['ffn']:
        if 'error' in r:
            rows.append([r['activation'], f"{r['rows']} x {r['hidden']}", f"failed: {r['error']}", '', '', ''])
            continue
        rows.append([r['activation'], f"{r['rows']} x {r['hidden']}", f"{r['ffn_ms']:.3f}", f"{r['act_ms']:.3f}",
                     f"{100 * r['time_share']:.1f} %", f"{100 * r['flops_share']:.2f} %"])
    lines += table(['activation', 'tokens x FFN hidden', 'FFN ms', 'activation ms', 'time share', 'FLOPs share'],
                   rows)
    return '\n'.join(lines) + '\n'


def precision(dtype):
    return 'float32' if dtype == 'float32' else f"{dtype} autocast over float32 weights"


def model_markdown(report, args, device):
    env, runs = report['environment'], report['model']['runs']
    first = next((r for r in runs if 'error' not in r), runs[0])
    lines = header(f"Training steps, {args.model}", env, device)
    lines += [f"{first['n_layer']} layers x {first['n_embd']}, batch {first['batch_size']} x {first['block_size']} "
              f"tokens, {precision(args.dtype)}, AdamW; median of {args.steps} steps after {WARMUP} warm-up steps. "
              "Only `activation` changes between rows (matched parameters). MFU: model.flops_per_token against "
              "the device's dense BF16 peak.", '']
    rows = []
    for r in runs:
        path = [r['moe_impl']] if report['model']['moe'] else []
        if 'error' in r:
            rows.append([r['activation'], *path, r['compile'], f"failed: {r['error']}", '', '', ''])
            continue
        rows.append([r['activation'], *path, r['compile'], f"{r['step_ms']:.1f}", f"{r['tokens_per_s']:,.0f}",
                     f"{100 * r['mfu']:.1f} %" if r['mfu'] is not None else 'n/a', fmt_bytes(r['peak_memory_bytes'])])
    columns = ['activation', *(['MoE experts'] if report['model']['moe'] else []), 'run as', 'step ms', 'tokens/s',
               'MFU', 'peak memory']
    lines += table(columns, rows)
    return '\n'.join(lines) + '\n'


# -----------------------------------------------------------------------------


def main(argv=None):
    """Run the suite that the arguments ask for, print and write its tables; returns the report (the JSON)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        report = {'environment': environment(device, argv), 'args': vars(args)}
        if args.model:
            report['model'] = run_model(args, device)
        else:
            report['activations'] = run_activations(args, device)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program, the tests for one
    report['seconds'] = time.perf_counter() - start
    markdown = model_markdown(report, args, device) if args.model else activations_markdown(report, args, device)
    print('\n' + markdown)
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    atomic_write(args.out + '.md', markdown.encode())
    atomic_write(args.out + '.json', (json.dumps(report, indent=1) + '\n').encode())
    log(f"wrote {args.out}.md and {args.out}.json in {report['seconds']:.0f} s")
    return report


if __name__ == '__main__':
    main()
