"""
What do PolyNorm and PolyReLU cost? This file times them next to ReLU, GELU, ReLU^2 and SwiGLU at matched
parameters: each activation and implementation alone, checked against float64 first, then its share of one FFN;
or, with --model, whole training steps of a config per activation. Both write <out>.md (the tables) and
<out>.json (every raw figure and the environment), after every row and when a signal stops the run. Usage
and every column: docs/gpu.md, "Benchmarks".
"""
import argparse
import itertools
import math
import os
import platform
import signal
import statistics
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from functools import cache, partial

import torch

from common import (cpu_name, device_kind, model_config, peak_bandwidth, peak_flops, saved_bytes, torch_threads,
                    write_results)
from model import ACT_IMPLS, ACTIVATIONS, FFN, GATED, GPT, GPTConfig, make_activation, swiglu_width
from settings import QUICKSTART, data_vocab, resolve

try:  # the fused Triton kernels; without Triton their rows say why they did not run
    import polykernels
except ImportError:
    polykernels = None

IMPLS = ('eager', 'ckpt', 'compile', 'fused', 'liger')
DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': torch.float32}

# Defaults per device. GPU: the paper's FFN widths (4096; the dense 1B's 8256, whose SwiGLU runs 5504; 16384).
# CPU: small shapes in float32 (CPUs without bf16 units emulate it slowly), without torch.compile (inductor's C++
# build takes about a minute a graph on 2 cores; add it with --impls or --compile), on one thread, since a thread
# descheduled by other work on a shared machine stalls every op that waits for it (medians of 0.1 ms read 10 ms).
DEFAULTS = {
    'cuda': dict(rows=[8192, 16384], widths=[4096, 8256, 16384], repeats=50, dtype='bfloat16', ffn_embd=2048,
                 impls=list(IMPLS), steps=10, threads=torch.get_num_threads(), compile=True),
    'cpu': dict(rows=[256], widths=[512, 1024], repeats=20, dtype='float32', ffn_embd=512,
                impls=['eager', 'ckpt', 'fused', 'liger'], steps=3, threads=1, compile=False),
}
# --quick on a GPU: PolyNorm at 16384 tokens and the paper's widths, the dense 1B's 8256, its gated width 5504
# (PolyNorm-GLU's) and the MoE 1B/7B expert's 1536, each implementation side by side, the speed goals' shape among them;
# the other activations' cost comes from the model suite's whole steps. On a CPU, one small shape.
# The goals' shape and implementations come first, so that a run cut short has them.
QUICK = {'cuda': dict(rows=[16384], widths=[8256, 5504, 1536], repeats=20, steps=5, activations=['polynorm'],
                      impls=['fused', 'compile', 'liger', 'eager']),
         'cpu': dict(rows=[64], widths=[256], repeats=5, steps=2)}
WARMUP = 3  # untimed runs before timing: they compile, autotune and fill the caching allocator
ROUNDS = 3  # the model suite times its variants in this many interleaved rounds
GROUPS = 5  # CUDA: the timed calls of one figure run in this many groups, each between one pair of events
MAX_SLEEP_MS = 50  # CUDA: the longest device sleep a group waits behind; a call whose host needs longer is refused
MAX_BUFFERS = 64  # rotation cap: tiny shapes sit in cache whatever we do
CPU_CACHE_BYTES = 32 * 2**20  # a typical last-level cache; CUDA devices report theirs
COMPILE_BACKEND = 'inductor'  # torch.compile's backend for the compile rows (the tests count graphs with 'eager')
QUICK_START = 'quickstart'  # --model quickstart: train.py's quick-start model

# -----------------------------------------------------------------------------
# 1. Command line


def positive(text):
    """argparse's type for a count: an int of at least 1."""
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return int(text)


def parse_args(argv):
    p = argparse.ArgumentParser(prog='bench.py', description="Time the PolyCom activations against the usual ones.")
    p.add_argument('--device', choices=['cuda', 'cpu'], default=device_kind())
    p.add_argument('--rows', type=positive, nargs='+', help="tokens per call (the rows of the FFN activation)")
    p.add_argument('--widths', type=positive, nargs='+',
                   help="FFN hidden sizes, as ffn_hidden in a config; gated activations run 2/3 of each on two inputs")
    p.add_argument('--activations', nargs='+', choices=ACTIVATIONS, metavar='ACTIVATION',
                   help=f"any of {', '.join(ACTIVATIONS)} (default: all)")
    p.add_argument('--impls', nargs='+', choices=IMPLS, metavar='IMPL', help=f"any of {', '.join(IMPLS)}")
    p.add_argument('--order', type=int, choices=range(1, 9), default=3, metavar='R', help="the PolyCom order, 1 to 8")
    p.add_argument('--dtype', choices=list(DTYPES), help="bfloat16 on a GPU, float32 on a CPU by default")
    p.add_argument('--repeats', type=positive, help="timed calls per figure")
    p.add_argument('--threads', type=positive, help="CPU threads for torch (1 on a CPU run, so timings stay steady)")
    p.add_argument('--ffn_embd', type=positive, help="n_embd of the FFN whose share the activation is (2048 on a GPU)")
    p.add_argument('--out', help="prefix of the .md and .json written (default out/bench or out/bench_<config>)")
    p.add_argument('--quick', action='store_true', help="the goals' shape and activations, fewer repeats or steps")
    p.add_argument('--model', help=f"a config file, or {QUICK_START} for train.py's quick-start model: time whole "
                                   "training steps instead of the activations alone")
    p.add_argument('--act_impls', nargs='+', choices=ACT_IMPLS, default=['auto'],
                   help="PolyCom's implementations in the FFN-share table and --model runs, a row each (default: auto)")
    p.add_argument('--n_layer', type=positive, help="with --model: keep this many layers, so a big model runs fast")
    p.add_argument('--batch_size', type=positive, help="with --model: sequences per step (default: micro_batch_size)")
    p.add_argument('--block_size', type=positive, help="with --model: tokens per sequence (the config's block_size)")
    p.add_argument('--steps', type=positive, help="with --model: timed training steps per round")
    p.add_argument('--compile', action=argparse.BooleanOptionalAction,
                   help="with --model: torch.compile the model (default: on CUDA only)")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """Fill the device's defaults and reject what cannot run, saying how to fix it (p.error exits)."""
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error("--device cuda, but this torch sees no CUDA device; run with --device cpu")
    defaults = {'activations': list(ACTIVATIONS), **DEFAULTS[args.device], **(QUICK[args.device] if args.quick else {})}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model not in (None, QUICK_START) and not os.path.isfile(args.model):
        p.error(f"--model {args.model}: no such file; give a config file (config/dense_1b.py) or {QUICK_START}")
    if args.model is None and any(getattr(args, n) is not None for n in ('n_layer', 'batch_size', 'block_size')):
        p.error("--n_layer, --batch_size and --block_size go with --model config/<name>.py")
    if args.out is None:
        args.out = os.path.join('out', f"bench_{os.path.splitext(os.path.basename(args.model))[0]}" if args.model
                                else 'bench')


# -----------------------------------------------------------------------------
# 2. Timing and memory


def measure(run, n_buffers, repeats, device, warmup=WARMUP, host_ahead=True):
    """Milliseconds per call of run(i), i cycling over the buffers, after `warmup` untimed calls. CPU: the median
    of `repeats` calls, each timed alone. CUDA: see cuda_ms_per_call; host_ahead=False times the calls back to
    back as they come, the steady state of a training loop whose host runs ahead of the GPU by itself."""
    for i in range(warmup):
        run(i % n_buffers)
    calls = [(warmup + i) % n_buffers for i in range(repeats)]
    if device.type == 'cuda':
        return cuda_ms_per_call(run, calls, device) if host_ahead else timed_group(run, calls, device, 0.0)[0]
    times = []
    for i in calls:
        t0 = time.perf_counter()
        run(i)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def cuda_ms_per_call(run, calls, device):
    """GPU milliseconds per call: the median over GROUPS groups of back-to-back calls, each between one pair of CUDA
    events and queued behind a device sleep, so that the host's per-call cost is not what is timed (docs/gpu.md,
    "Benchmarks", says why, and why not CUDA graphs). A group that the sleep did not cover is not counted, and the
    next is smaller and sleeps longer, up to MAX_SLEEP_MS: a function that synchronizes is refused within a second."""
    size = max(1, len(calls) // GROUPS)
    cycle = itertools.cycle(calls)
    sleep_ms, figures = 1.0, []
    for _ in range(4 * GROUPS):
        group = [next(cycle) for _ in range(size)]
        ms, host_ms, ahead = timed_group(run, group, device, sleep_ms)
        if ahead:
            figures.append(ms)
            if len(figures) == GROUPS:
                return statistics.median(figures)
        elif len(group) == 1 and sleep_ms >= MAX_SLEEP_MS:
            break  # the longest sleep did not cover one call
        else:
            size = max(1, size // 2)
        host_per_call = max(host_ms / len(group), 1e-3)
        size = max(1, min(size, int(MAX_SLEEP_MS / (2 * host_per_call))))  # so that the sleep can cover the group
        sleep_ms = min(MAX_SLEEP_MS, 2 * host_per_call * size + 0.1)  # twice what the host took to queue as many
    raise RuntimeError(f"the host could not queue the calls ahead of the GPU (does the function synchronize, or "
                       f"take the host over {MAX_SLEEP_MS} ms a call?); its time would be the host's, so it is "
                       "not reported")


def timed_group(run, group, device, sleep_ms):
    """(GPU ms per call of run over the group, host ms to queue it, whether the host queued it all before the
    device sleep ended)."""
    start, end, slept = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    torch.cuda.synchronize(device)
    if sleep_ms:
        torch.cuda._sleep(int(sleep_ms * sleep_cycles_per_ms(device)))
        slept.record()
    start.record()
    t0 = time.perf_counter()
    for i in group:
        run(i)
    host_ms = 1e3 * (time.perf_counter() - t0)
    end.record()
    ahead = not sleep_ms or not slept.query()  # still sleeping: the GPU has not begun the group
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / len(group), host_ms, ahead


@cache  # one calibration per device and process
def sleep_cycles_per_ms(device):
    """GPU clock cycles of torch.cuda._sleep per millisecond, measured after a first sleep that loads the kernel."""
    cycles = 10**7
    return cycles / measure(lambda _: torch.cuda._sleep(cycles), 1, 1, device, warmup=1, host_ahead=False)


def with_peak_memory(fn, device):
    """(fn(), the most memory it allocated on top of what was allocated before): CUDA only, None on a CPU."""
    if device.type != 'cuda':
        return fn(), None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, torch.cuda.max_memory_allocated(device) - before


def copy_bandwidth(dtype, repeats, device):
    """GB/s of y.copy_(x) on a buffer far bigger than the cache: the memory roofline of this device."""
    n_bytes = 2**30 if device.type == 'cuda' else 2**26
    x = torch.randn(n_bytes // dtype.itemsize, dtype=dtype, device=device)
    y = torch.empty_like(x)
    return 2 * x.nbytes / measure(lambda i: y.copy_(x), 1, repeats, device) / 1e6  # read x, write y


def make_buffers(n_inputs, shape, dtype, device):
    """Sets of (inputs, dy), enough that cycling through them moves 4x the cache, so none is read from cache.
    The inputs' row count is marked dynamic: a compiled implementation then serves every row count with one graph
    per width."""
    cache_bytes = torch.cuda.get_device_properties(device).L2_cache_size if device.type == 'cuda' else CPU_CACHE_BYTES
    set_bytes = (n_inputs + 1) * math.prod(shape) * dtype.itemsize
    n = min(MAX_BUFFERS, max(2, math.ceil(4 * cache_bytes / set_bytes)))
    buffers = []
    for _ in range(n):
        inputs = [torch.randn(shape, dtype=dtype, device=device, requires_grad=True) for _ in range(n_inputs)]
        for x in inputs:
            if shape[0] > 1:  # dynamo specializes sizes 0 and 1 whatever it is told
                torch._dynamo.mark_dynamic(x, 0)
        buffers.append((inputs, torch.randn(shape, dtype=dtype, device=device)))
    return buffers


def autocast(dtype, device):
    """Matmuls in dtype over float32 weights, as in training; plain float32 without autocast."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != 'float32')


def compile_room(n_entries):
    """A context with room for n_entries compiled variants of one piece of code. Dynamo keeps at most 8 per code
    object by default (recompile_limit) and runs the rest eager, silently; here the variants share code (glu, an
    activation module's forward, GPT.forward), and a row labelled compiled must be compiled."""
    return torch._dynamo.config.patch(recompile_limit=max(8, n_entries))


# -----------------------------------------------------------------------------
# 3. Cost models: the bytes an activation must move, the FLOPs it does


def act_width(activation, hidden):
    """The width the activation runs at: a gated one's is 2/3 of the FFN hidden size (model.py's parameter match)."""
    return swiglu_width(hidden) if activation in GATED else hidden


def n_inputs(activation):
    return 2 if activation in GATED else 1


def bytes_moved(activation, rows, width, itemsize):
    """The least traffic of one call, (forward, forward+backward) bytes: forward reads the inputs and writes y,
    backward reads the inputs and dy and writes their gradients. The r+1 PolyCom scalars are left out."""
    numel, k = rows * width, n_inputs(activation)
    forward = (k + 1) * numel * itemsize
    backward = (2 * k + 1) * numel * itemsize
    return forward, forward + backward


def forward_flops_per_element(activation, r):
    """Arithmetic operations per element of the activation's input in the forward, at PolyCom order r, counted from
    the formulas of model.py; a max, multiply, add, divide, exp, erf or rsqrt counts one. Per-row work (PolyNorm's
    r rsqrt) is left out: it is 1/width of the rest. A gated activation adds one multiply by up."""
    counts = {'relu': 1,  # max(x, 0)
              'gelu': 5,  # x / sqrt(2), erf, + 1, * x, * 0.5
              'relu2': 2,  # max, square
              'swiglu': 5,  # silu(g) * u = g / (1 + exp(-g)) * u: negate, exp, add, divide, multiply
              'polyrelu': 3 * r,  # relu, r-1 powers, r weights, r adds (the bias included)
              'polynorm': 6 * r - 1}  # r-1 powers; per power square, row-sum add, scale by rsqrt; r weights, r adds
    if activation in GATED and activation != 'swiglu':
        return counts[activation.removesuffix('_glu')] + 1
    return counts[activation]


def flops_per_token(activation, n_embd, hidden, order):
    """Training FLOPs per token of one FFN, (matmuls, activation): 2 per multiply-add, times 3 for forward and
    backward, over the FFN's weights (2 matrices, or a gated FFN's 3 at 2/3 the width); the activation's forward
    count per element times the width, times the same 3, a rough count that cannot move a share this small."""
    width = act_width(activation, hidden)
    n_matrices = 3 if activation in GATED else 2
    matmul = 6 * n_matrices * n_embd * width
    act = 3 * forward_flops_per_element(activation, order) * width
    return matmul, act


# -----------------------------------------------------------------------------
# 4. The implementations under test


def poly(activation):
    """The PolyCom activation inside: 'polynorm' for 'polynorm' and 'polynorm_glu', None for the baselines."""
    base = activation.removesuffix('_glu')
    return base if base in ('polynorm', 'polyrelu') else None


def act_impls(activation, args):
    """The act_impls an activation runs with, a row each: --act_impls for PolyCom; None for a baseline."""
    return args.act_impls if poly(activation) else [None]


def applies(activation, impl):
    """Whether the implementation exists for the activation at all (no table row otherwise)."""
    is_poly = poly(activation) is not None
    return {'eager': True, 'compile': True, 'ckpt': is_poly, 'fused': is_poly,
            'liger': activation == 'polynorm'}[impl]


def triton_runs_on(device):
    """Whether polykernels.py's kernels run here: CUDA tensors, or the CPU through Triton's interpreter (for tests:
    slow, not timing), which polykernels.py takes when TRITON_INTERPRET=1 was set before it was imported."""
    return polykernels is not None and (device.type == 'cuda' or polykernels.INTERPRETED)


def liger_poly_norm_class():
    """(Liger-Kernel's PolyNorm class, None), or (None, why it cannot be had)."""
    try:  # the module itself, not liger_kernel.transformers, whose __init__ may pull in `transformers`
        from liger_kernel.transformers.poly_norm import LigerPolyNorm
    except Exception as e:  # noqa: BLE001 -- e.g. built for another Triton: reported, and the suite goes on
        if isinstance(e, ModuleNotFoundError) and (e.name or '').startswith('liger_kernel'):
            return None, "liger_kernel is not installed (pip install liger-kernel)"
        return None, f"liger_kernel failed to import: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return LigerPolyNorm, None


def unavailable(activation, impl, order, device):
    """Why an implementation that applies cannot run here, or None when it can."""
    if impl == 'fused':
        if polykernels is None:
            return "polykernels.py did not import (it needs Triton: pip install triton)"
        if not triton_runs_on(device):
            return "the Triton kernels need a CUDA device (or TRITON_INTERPRET=1, for tests)"
    if impl == 'liger':
        liger, reason = liger_poly_norm_class()
        if liger is None:
            return reason
        if device.type != 'cuda':
            return "Liger's kernels need a CUDA device (they fail in Triton's CPU interpreter)"
        if order != 3:
            return f"Liger's PolyNorm is order 3 only, got --order {order}"
    return None


def glu(act, gate, up):  # a gated FFN's activation, as in model.FFN: act(gate(x)) * up(x)
    return act(gate) * up


def build(activation, impl, order, device):
    """(forward, params): forward(*inputs) -> y computes the activation the way `impl` does."""
    cfg = GPTConfig(activation=activation, poly_order=order, act_checkpointing=impl == 'ckpt', act_impl='plain')
    with torch.device(device):  # built where it runs, as train.py builds its model
        act = make_activation(cfg)
    params = list(act.parameters())
    if params:  # unequal coefficients, so that a mixed-up weight order shows against float64 (1/r each would not)
        with torch.no_grad():
            act.weight.copy_(torch.arange(1, order + 1) / order)
            act.bias.fill_(0.1)
    forward = act
    if impl == 'fused' and poly(activation) == 'polynorm':  # the kernels called directly, whatever 'auto' picks
        forward = partial(polykernels.poly_norm_fused, weight=act.weight, bias=act.bias, eps=act.eps)
    elif impl == 'fused':
        forward = partial(polykernels.poly_relu_fused, weight=act.weight, bias=act.bias)
    elif impl == 'liger':
        forward = liger_poly_norm(act)
        params = list(forward.parameters())
    if activation in GATED:
        forward = partial(glu, forward)
    if impl == 'compile':
        # static widths, as in a model, and a dynamic row count (make_buffers marks it): one graph per activation
        # and width, whatever the row counts; dynamic=False stops dynamo from making the width dynamic too when
        # the same code meets a second width
        forward = torch.compile(forward, dynamic=False, backend=COMPILE_BACKEND)
    return forward, params


def liger_poly_norm(act):
    """Liger's PolyNorm holding the same coefficients as `act`, a model.PolyNorm."""
    # in_place=False: Liger writes dx into dy otherwise, and the timed runs reuse each dy buffer
    liger = liger_poly_norm_class()[0](eps=act.eps, in_place=False).to(act.weight.device)
    with torch.no_grad():
        liger.weight.copy_(act.weight.flip(0))  # Liger's weight[0] goes with x**3, model.py's with x
        liger.bias.copy_(act.bias.view_as(liger.bias))  # a scalar there, shape (1,) here
    return liger


def diff_from_float64(forward, reference, inputs, dy):
    """The largest relative difference (max |a - b| / max |b|), in y and in the input gradients, from the
    definition: the eager code (model.py) run on float64 copies of the inputs. Against float64, not against eager
    in the same dtype, so that a bf16 implementation is held to what bf16 can do, not to eager's own rounding."""
    leaves = [x.detach().double().requires_grad_() for x in inputs]
    y_ref = reference(*leaves)
    ref = [y_ref.detach(), *torch.autograd.grad(y_ref, leaves, dy.double())]
    y = forward(*inputs)
    out = [y.detach(), *torch.autograd.grad(y, inputs, dy)]
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()
               for a, b in zip(out, ref))


# -----------------------------------------------------------------------------
# 5. The activation suite


def forward_backward(forward, params, buffers, autocast=nullcontext()):
    """run(i): forward on buffer i's inputs, then backward from its dy into the inputs and params."""
    def run(i):
        inputs, dy = buffers[i]
        with autocast:
            y = forward(*inputs)
        torch.autograd.grad(y, [*inputs, *params], dy)
    return run


def bench_activation(activation, rows, width, built, reference, buffers, args, device, copy_GBps):
    """Time, bandwidth and memory of one implementation, built = (forward, params), at one shape (a table row)."""
    dtype = DTYPES[args.dtype]
    forward, params = built
    row = dict(n_inputs=n_inputs(activation), dtype=args.dtype, buffers=len(buffers), repeats=args.repeats)
    inputs, dy = buffers[0]
    row['diff_vs_float64'] = diff_from_float64(forward, reference, inputs, dy)
    # in bf16, float32 math rounded once lands within about 4e-3 of float64, and a PyTorch imitation of Liger's
    # bf16 powers within 5e-3 at width 8256; Liger's weights in model.py's order land near 0.4
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    if row['diff_vs_float64'] > tolerance:
        row['error'] = (f"output differs from the float64 definition by {row['diff_vs_float64']:.2e} "
                        f"(tolerance {tolerance}): not timed")
        return row

    def fwd(i):  # a training forward: autograd records the graph and keeps what backward needs
        forward(*buffers[i][0])

    fwd_bwd = forward_backward(forward, params, buffers)
    row['fwd_ms'] = measure(fwd, len(buffers), args.repeats, device)
    row['fwd_bwd_ms'] = measure(fwd_bwd, len(buffers), args.repeats, device)
    row['fwd_bytes'], row['fwd_bwd_bytes'] = bytes_moved(activation, rows, width, dtype.itemsize)
    for phase in ('fwd', 'fwd_bwd'):
        row[f'{phase}_GBps'] = row[f'{phase}_bytes'] / row[f'{phase}_ms'] / 1e6
        row[f'{phase}_roofline'] = row[f'{phase}_GBps'] / copy_GBps
    row['input_bytes'] = n_inputs(activation) * rows * width * dtype.itemsize
    row['saved_bytes'] = saved_bytes(forward, inputs, params)
    _, row['peak_extra_bytes'] = with_peak_memory(lambda: fwd_bwd(0), device)
    return row


def bench_ffn(activation, act_impl, rows, hidden, args, device):
    """The activation's share of one FFN's forward+backward, with the activation as model.py runs it with
    act_impl, next to its share of the FLOPs."""
    dtype = DTYPES[args.dtype]
    cfg = GPTConfig(n_embd=args.ffn_embd, n_head=1, ffn_hidden=hidden, activation=activation,
                    poly_order=args.order, act_impl=act_impl or 'auto')
    with torch.device(device):  # built where it runs, as train.py builds its model
        ffn = FFN(cfg)
    width = act_width(activation, hidden)

    def ms(forward, params, k, shape):
        buffers = make_buffers(k, shape, dtype, device)
        run = forward_backward(forward, params, buffers, autocast(args.dtype, device))
        return measure(run, len(buffers), args.repeats, device)

    ffn_ms = ms(lambda h: ffn(h)[0], list(ffn.parameters()), 1, (rows, args.ffn_embd))
    act = partial(glu, ffn.act) if activation in GATED else ffn.act
    act_ms = ms(act, list(ffn.act.parameters()), n_inputs(activation), (rows, width))
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


def runnable_impls(args, device):
    """activation -> the implementations to time here, and a note for each one that applies but cannot run."""
    reasons = {(a, i): unavailable(a, i, args.order, device) for a in args.activations for i in args.impls
               if applies(a, i)}
    runnable = {a: [i for i in args.impls if (a, i) in reasons and not reasons[a, i]] for a in args.activations}
    return runnable, [f"{a} {i}: not run, {reason}" for (a, i), reason in reasons.items() if reason]


def activation_rows(args, device, copy_GBps, runnable, results, save):
    """The first table's rows, appended to results, save() after each. Each implementation is built once per
    activation and width and serves every row count, so torch.compile makes one graph per activation and width,
    not one per shape."""
    for hidden in args.widths:
        for activation in [a for a in args.activations if runnable[a]]:
            width = act_width(activation, hidden)
            reference, _ = build(activation, 'eager', args.order, device)
            built = {impl: guarded(f"{activation} {impl} width {width}", build, activation, impl, args.order, device)
                     for impl in runnable[activation]}
            for rows in args.rows:
                buffers = make_buffers(n_inputs(activation), (rows, width), DTYPES[args.dtype], device)
                for impl, forward in built.items():
                    label = f"{activation} {impl} {rows}x{width}"
                    if isinstance(forward, dict):  # the build failed: its error is the row
                        row = forward
                    else:
                        row = guarded(label, bench_activation, activation, rows, width, forward, reference, buffers,
                                      args, device, copy_GBps)
                    row = {'activation': activation, 'impl': impl, 'rows': rows, 'hidden': hidden, 'width': width,
                           **row}
                    results.append(row)
                    save()
                    log(f"  {label}: " + (row.get('error') or
                                          f"fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwd_bwd_ms']:.3f} ms, "
                                          f"saved {fmt_bytes(row['saved_bytes'])}"))
                del buffers


def ffn_rows(args, device, results, save):
    """The second table's rows, appended to results, save() after each: the activation's share of its FFN, per
    act_impl where PolyCom has a choice."""
    rows = max(args.rows)  # the share hardly depends on the token count: one row count is enough
    for hidden in args.widths:
        for activation in args.activations:
            for act_impl in act_impls(activation, args):
                label = ' '.join(['FFN', activation, *filter(None, [act_impl]), f"{rows}x{hidden}"])
                row = {'activation': activation, 'act_impl': act_impl, 'rows': rows, 'hidden': hidden,
                       **guarded(label, bench_ffn, activation, act_impl, rows, hidden, args, device)}
                results.append(row)
                save()
                log(f"  {label}: " + (row.get('error') or
                                      f"FFN {row['ffn_ms']:.3f} ms, activation {100 * row['time_share']:.1f} %"))


def run_activations(args, device, report, save):
    """Fill report (the JSON's 'activations') as the figures come, calling save() after each."""
    datasheet = peak_bandwidth(torch.cuda.get_device_name(device)) if device.type == 'cuda' else None
    report.update(copy_GBps=None, datasheet_GBps=datasheet and datasheet / 1e9, activations=[], ffn=[], notes=[])
    report['copy_GBps'] = copy_GBps = copy_bandwidth(DTYPES[args.dtype], args.repeats, device)
    log(f"copy bandwidth: {copy_GBps:.0f} GB/s")
    runnable, report['notes'] = runnable_impls(args, device)
    save()
    with compile_room(2 * len(args.activations) * len(args.widths)):  # a graph per activation and width, x2 spare
        activation_rows(args, device, copy_GBps, runnable, report['activations'], save)
    ffn_rows(args, device, report['ffn'], save)


# -----------------------------------------------------------------------------
# 6. The model suite: whole training steps


def model_variants(args, moe):
    """(activation, act_impl, moe_impl, compile mode) of every row, in table order; None where not chosen."""
    if moe:
        # the grouped path is one graph (fullgraph); the loop's data-dependent shapes break the graph at every
        # expert and recompile as the token counts change, so it runs eager, next to an eager grouped run
        paths = [('grouped', 'compiled, fullgraph')] if args.compile else []
        paths += [('grouped', 'eager'), ('loop', 'eager')]
    else:
        paths = [(None, 'compiled' if args.compile else 'eager')]  # as train.py compiles
    return [(activation, act_impl, moe_impl, mode) for activation in args.activations
            for act_impl in act_impls(activation, args) for moe_impl, mode in paths]


def build_step(cfg, batch_size, compile_mode, args, device):
    """A function that runs one forward + backward + AdamW step on a fixed random batch, after WARMUP such steps
    (they compile); and the model's figures for its row."""
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs, as train.py builds it: a GPU draws a 1B slice in a blink
        gpt = GPT(cfg)
    optimizer = torch.optim.AdamW(gpt.optim_groups(0.1), lr=1e-4, betas=(0.9, 0.95), fused=device.type == 'cuda')
    if compile_mode != 'eager':
        for block in gpt.blocks:  # block by block, as train.py compiles: one graph serves every layer
            block.compile(fullgraph=compile_mode == 'compiled, fullgraph')
    tokens = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]  # one fixed batch: the step is timed, not the data loading
    amp = autocast(args.dtype, device)

    def step(_):
        with amp:
            _, losses = gpt(x, y)
        losses['loss'].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP):
        step(0)
    n, flops = gpt.num_params(), gpt.flops_per_token(cfg.block_size)
    # the output layer's share: in a slice of a few layers it can be most of the step, which would hide the FFN
    return step, dict(flops_per_token=flops, params_total=n['total'], params_active=n['active'],
                      output_flops_share=6 * cfg.n_embd * cfg.vocab_size / flops)


def model_settings(args):
    """The settings of the model --model names, resolved as train.py resolves them (settings.resolve), with
    --n_layer and --block_size applied."""
    config, _ = resolve([QUICKSTART if args.model == QUICK_START else args.model])
    config['vocab_size'] = data_vocab(config)
    config.update({k: getattr(args, k) for k in ('n_layer', 'block_size') if getattr(args, k) is not None})
    return config


def variant_config(settings, activation, act_impl, moe_impl, args):
    """The config's GPTConfig with one row's activation and implementations."""
    # per-expert coefficients exist for PolyCom only: the baselines run without
    extra = {'act_impl': act_impl} if act_impl else {'poly_per_expert': False}
    if moe_impl:
        extra['moe_impl'] = moe_impl
    try:
        return model_config({**settings, 'activation': activation, **extra})
    except ValueError as e:  # GPTConfig's checks, e.g. act_impl='triton' with poly_per_expert
        raise SystemExit(f"--model {args.model}: {e}") from None


def run_model(args, device, report, save):
    """Fill report (the JSON's 'model') as the figures come, calling save() after each. Each variant is built,
    warmed and timed for a first round of args.steps steps at once, so that a run stopped early has a figure for
    every variant it reached; then the other ROUNDS - 1 rounds go round the variants, interleaved, so that a
    noisy machine slows them alike. A variant's figure is the median of its rounds so far."""
    settings = model_settings(args)
    batch_size = args.batch_size or settings['micro_batch_size']
    moe = settings['n_experts'] > 0
    report.update(config=args.model, moe=moe, runs=[])
    rows, steps = report['runs'], {}  # steps: a row's index -> its step function, until a step fails
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == 'cuda' else None

    def time_round(i):
        ms = guarded(rows[i]['label'], measure, steps[i], 1, args.steps, device, 0, False)
        if isinstance(ms, dict):  # the error of a step that failed: no more rounds for it
            rows[i].update(ms)
            del steps[i]
            return
        row = rows[i]
        row.setdefault('round_ms', []).append(ms)
        row['step_ms'] = statistics.median(row['round_ms'])
        row['tokens_per_s'] = batch_size * row['block_size'] / (row['step_ms'] / 1e3)
        row['mfu'] = row['flops_per_token'] * row['tokens_per_s'] / peak if peak else None
        save()
        log(f"  {row['label']}: round {len(row['round_ms'])}: {ms:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s")

    with compile_room(2 * len(model_variants(args, moe))):
        for i, (activation, act_impl, moe_impl, mode) in enumerate(model_variants(args, moe)):
            cfg = variant_config(settings, activation, act_impl, moe_impl, args)
            label = ' '.join([activation, *filter(None, [act_impl, moe_impl]), f"({mode})"])
            rows.append({'activation': activation, 'act_impl': act_impl, 'moe_impl': moe_impl, 'compile': mode,
                         'n_layer': cfg.n_layer, 'n_embd': cfg.n_embd, 'block_size': cfg.block_size,
                         'vocab_size': cfg.vocab_size, 'batch_size': batch_size, 'dtype': args.dtype,
                         'steps': args.steps, 'label': label})
            built = guarded(label, with_peak_memory, lambda: build_step(cfg, batch_size, mode, args, device), device)
            if isinstance(built, dict):  # the error of a variant that did not build or warm up
                rows[i].update(built)
                save()
                continue
            (steps[i], figures), rows[i]['peak_memory_bytes'] = built  # the most it adds to what others hold
            rows[i].update(figures)
            log(f"  {label}: built and warmed up")
            time_round(i)
        for _ in range(ROUNDS - 1):
            for i in list(steps):
                time_round(i)


# -----------------------------------------------------------------------------
# 7. The report


log = partial(print, flush=True)  # progress, shown as it comes


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
    _, liger_reason = liger_poly_norm_class()
    return {'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else f"CPU: {cpu_name()}",
            'cpu': cpu_name(), 'cpu_threads': torch.get_num_threads(), 'torch': torch.__version__,
            'triton': polykernels and polykernels.triton.__version__, 'cuda': torch.version.cuda,
            'python': platform.python_version(), 'liger_kernel': liger_reason or 'imported',
            'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'command': ' '.join(['python', 'bench.py', *(sys.argv[1:] if argv is None else argv)])}


def header(title, env, device, method):
    """A table's title, the machine and the command, how it was measured, and on a CPU what that means."""
    lines = [f"### {title}", '',
             f"{env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; {env['date']}",
             f"`{env['command']}`", '', method + ' Columns: docs/gpu.md, "Benchmarks".', '']
    if device.type != 'cuda':
        lines += [f"**CPU figures** (torch threads: {env['cpu_threads']}, timed with time.perf_counter): they rank the "
                  "implementations on this CPU and say nothing of a GPU. Small shapes stay partly in the CPU's "
                  "caches, so GB/s can pass the copy roofline. Peak memory is CUDA's alone; saved for bwd is exact.",
                  '']
    return lines


def table(columns, records, head, figures):
    """Markdown lines, a row per record: head(r), then figures(r), or r's error where it failed."""
    lines = [f"| {' | '.join(columns)} |", f"|{'|'.join('---' for _ in columns)}|"]
    for r in records:
        cells = [*head(r), *([f"failed: {r['error']}"] if 'error' in r else figures(r))]
        lines.append(f"| {' | '.join(cells + [''] * (len(columns) - len(cells)))} |")
    return lines


def shape_text(r):
    return f"{r['rows']} x {r['width']}" + (' (x2)' if r['activation'] in GATED else '')


def impl_text(r):
    # Liger's forward raises x to its powers in the input's dtype (model.py and polykernels.py: in float32)
    return f"liger (powers in {r['dtype']})" if r['impl'] == 'liger' and r['dtype'] != 'float32' else r['impl']


def activations_markdown(report, args, device):
    env, act = report['environment'], report['activations']
    copy = f"{fmt_GBps(act['copy_GBps'])} GB/s" if act['copy_GBps'] else 'not measured'
    if act['copy_GBps'] and act['datasheet_GBps']:
        share = 100 * act['copy_GBps'] / act['datasheet_GBps']
        copy += f" ({share:.0f} % of the datasheet's {act['datasheet_GBps']:.0f} GB/s)"
    timing = (f"GPU time per call: the median of {GROUPS} groups of back-to-back calls, each between one pair of "
              "CUDA events, queued behind a device sleep so that the host's per-call cost is not timed"
              if device.type == 'cuda' else "Time per call: the median of calls timed one by one")
    lines = header(f"Activation cost, {args.dtype}", env, device,
                   f"Copy bandwidth (the roofline): {copy}. {timing}; {args.repeats} "
                   "timed calls per figure. vs float64: the largest difference of y and the input gradients from "
                   "the definition in float64, relative to its largest value.")

    def figures(r):
        return [f"{r['fwd_ms']:.3f}", f"{r['fwd_bwd_ms']:.3f}",
                f"{fmt_GBps(r['fwd_GBps'])} ({100 * r['fwd_roofline']:.0f} %)",
                f"{fmt_GBps(r['fwd_bwd_GBps'])} ({100 * r['fwd_bwd_roofline']:.0f} %)",
                f"{fmt_bytes(r['saved_bytes'])} ({r['saved_bytes'] / r['input_bytes']:.1f}x)",
                fmt_bytes(r['peak_extra_bytes']), f"{r['diff_vs_float64']:.1e}"]

    lines += table(['activation', 'impl', 'tokens x width', 'fwd ms', 'fwd+bwd ms', 'fwd GB/s (roofline)',
                    'fwd+bwd GB/s (roofline)', 'saved for bwd (x input)', 'peak extra', 'vs float64'],
                   act['activations'], lambda r: [r['activation'], impl_text(r), shape_text(r)], figures)
    lines += [''] + [f"- {note}" for note in act['notes']] + ([''] if act['notes'] else [])
    lines += [f"#### Share of one FFN (n_embd {args.ffn_embd}, forward+backward)", '',
              "The activation as model.py runs it with each act_impl, timed alone and inside up projection + "
              "activation + down projection, next to its share of the FLOPs (flops_per_token in bench.py).", '']
    lines += table(['activation', 'act_impl', 'tokens x FFN hidden', 'FFN ms', 'activation ms', 'time share',
                    'FLOPs share'], act['ffn'],
                   lambda r: [r['activation'], r['act_impl'] or '-', f"{r['rows']} x {r['hidden']}"],
                   lambda r: [f"{r['ffn_ms']:.3f}", f"{r['act_ms']:.3f}", f"{100 * r['time_share']:.1f} %",
                              f"{100 * r['flops_share']:.2f} %"])
    return '\n'.join(lines) + '\n'


def model_markdown(report, args, device):
    env, runs, moe = report['environment'], report['model']['runs'], report['model']['moe']
    if not runs:
        return '\n'.join(header(f"Training steps, {args.model}", env, device, "No variant was built.")) + '\n'
    first = runs[0]
    timing = "back-to-back steps between one pair of CUDA events" if device.type == 'cuda' else "the median step"
    precision = 'float32' if args.dtype == 'float32' else f"{args.dtype} autocast over float32 weights"
    lines = header(f"Training steps, {args.model}", env, device,
                   f"{first['n_layer']} layers x {first['n_embd']}, vocabulary {first['vocab_size']}, batch "
                   f"{first['batch_size']} x {first['block_size']} tokens, {precision}, AdamW. Each variant is "
                   f"built, warmed up ({WARMUP} steps) and timed for one round of {args.steps} steps ({timing}) in "
                   f"turn, then the other {ROUNDS - 1} rounds go round the variants; step ms is the median round, "
                   "rounds: how many. Only `activation` (and "
                   "`act_impl`, PolyCom's implementation) changes between rows (matched parameters). MFU: "
                   "model.flops_per_token against the device's dense BF16 peak; output layer: its share of the "
                   "FLOPs.")
    baseline = {}  # the first activation's step time, per (MoE path, compile mode), for the ratio column
    for r in runs:
        if 'step_ms' in r and r['activation'] == first['activation']:
            baseline.setdefault((r['moe_impl'], r['compile']), r['step_ms'])

    def figures(r):
        if 'step_ms' not in r:
            return ['not timed: the run stopped first']
        base = baseline.get((r['moe_impl'], r['compile']))
        return [f"{r['step_ms']:.1f}", str(len(r['round_ms'])), f"{r['step_ms'] / base:.2f}x" if base else 'n/a',
                f"{r['tokens_per_s']:,.0f}", f"{100 * r['mfu']:.1f} %" if r['mfu'] is not None else 'n/a',
                f"{100 * r['output_flops_share']:.0f} %", fmt_bytes(r['peak_memory_bytes'])]

    columns = ['activation', 'act_impl', *(['MoE experts'] if moe else []), 'run as', 'step ms', 'rounds',
               f"vs {first['activation']}", 'tokens/s', 'MFU', 'output layer', 'peak memory']
    lines += table(columns, runs,
                   lambda r: [r['activation'], r['act_impl'] or '-', *([r['moe_impl']] if moe else []), r['compile']],
                   figures)
    return '\n'.join(lines) + '\n'


# -----------------------------------------------------------------------------


class Stopped(BaseException):
    """A stop signal, raised where the run is: not an Exception, so that guarded() lets it through to main."""


def stop(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv=None):
    """Run the suite that the arguments ask for, print and write its tables; returns the report (the JSON). The
    .md and .json are written whole after every row: SIGTERM (a time limit's) or Ctrl-C stops the run with what it
    measured written, saying so."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    start = time.perf_counter()
    suite = 'model' if args.model else 'activations'
    report = {'environment': {}, 'args': vars(args), suite: {}}  # the environment once the run's threads are set
    markdown = model_markdown if args.model else activations_markdown

    def save():
        report['seconds'] = time.perf_counter() - start
        text = markdown(report, args, device)
        if 'stopped' in report:
            text += f"\n**Stopped by {report['stopped']} after {report['seconds']:.0f} s**: the rows above are " \
                    "what was measured until then.\n"
        write_results(args.out, text, report)
        return text

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with torch_threads(args.threads):  # and back as they were: main() may run inside another program
            report['environment'] = environment(device, argv)
            (run_model if args.model else run_activations)(args, device, report[suite], save)
    except (Stopped, KeyboardInterrupt) as e:
        report['stopped'] = str(e) or 'SIGINT'
        save()
        log(f"stopped by {report['stopped']}; wrote what was measured to {args.out}.md and {args.out}.json")
        raise SystemExit(128 + (signal.SIGTERM if isinstance(e, Stopped) else signal.SIGINT)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    print('\n' + save())
    log(f"wrote {args.out}.md and {args.out}.json in {report['seconds']:.0f} s")
    return report


if __name__ == '__main__':
    main()
