"""
What the scripts share about the machine, so that no script imports another (settings.py holds the settings,
checkpoint.py a run's files).

    model_config(config)          the GPTConfig inside a run's config dict
    device_kind(asked)            'cuda' or 'cpu': the one asked for, else the GPU when there is one
    peak_flops(device_name)       a GPU's dense bf16 FLOP/s, for MFU
    cpu_name()                    the CPU's model name, for reports
    join_processes(kind, timeout_s)   (rank, world_size, device), joining torchrun's process group when launched by it
    lost_processes(error, timeout_s)  the one line for a process group's error: a process stopped, or timed out
    one_line_errors(timeout_s), catch_stop_signals(), torch_threads(n)   what a training process runs inside
    check_memory(...), cpu_threads()   refuse what cannot fit; the threads the idle cores allow
    saved_bytes(forward, inputs, params)   the activation memory autograd keeps for backward
    pyplot(), save_figure(fig, path, dpi)   optional matplotlib, and PNGs written whole
    write_results(prefix, markdown, report)   a benchmark's <prefix>.md and <prefix>.json, written whole
    bracket(losses, chosen, sd)   how an lr grid brackets its chosen lr: the sweep widens by it, the report says it
"""

import datetime
import gc
import io
import json
import math
import os
import platform
import re
import signal
import threading
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from data.shards import ShardError, atomic_write
from model import GPTConfig
from settings import EXIT_DIVERGED, model_keys

# -----------------------------------------------------------------------------
# Configs and hardware


def model_config(config):
    """The GPTConfig inside a config dict (a run's settings, or a checkpoint's)."""
    return GPTConfig(**model_keys(config))


# Dense BF16 tensor-core peak per GPU, from the vendors' datasheets; the first name found in the device's wins.
PEAK_FLOPS = [('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
              ('A100', 312e12)]


# Memory bandwidth per GPU (HBM), from the datasheets; the first name found in the device's wins.
PEAK_BANDWIDTH = [('H100 PCIe', 2.0e12), ('H100 NVL', 3.9e12), ('H200 NVL', 4.8e12), ('H100', 3.35e12),
                  ('H200', 4.8e12)]


def device_kind(asked=None):
    """'cuda' or 'cpu': the one asked for, else the GPU when torch sees one."""
    return asked or ('cuda' if torch.cuda.is_available() else 'cpu')


def peak_flops(device_name):
    """The dense BF16 peak FLOP/s of a GPU, from its name; None when unknown (then MFU shows as n/a)."""
    for name, flops in PEAK_FLOPS:
        if name in device_name:
            return flops
    return None


def peak_bandwidth(device_name):
    """The memory bandwidth of a GPU in bytes/s, from its datasheet and its name; None when unknown."""
    return next((bandwidth for name, bandwidth in PEAK_BANDWIDTH if name in device_name), None)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def join_processes(kind, timeout_s=None):
    """(rank, world_size, device) for device kind 'cuda' or 'cpu'. Launched by torchrun (which sets RANK,
    LOCAL_RANK and WORLD_SIZE for every process), this process joins the process group: nccl from its own GPU,
    or gloo on the CPU; otherwise it is the only process. timeout_s bounds every wait for the others, joining
    and each collective (None: torch's default)."""
    if 'RANK' not in os.environ:
        return 0, 1, torch.device(kind)
    cuda = kind == 'cuda'
    # LOCAL_RANK picks this process's GPU on its node; RANK counts processes across all nodes
    device = torch.device('cuda', int(os.environ['LOCAL_RANK'])) if cuda else torch.device('cpu')
    if cuda:
        torch.cuda.set_device(device)  # before NCCL starts, so that each process talks from its own GPU
    timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else default_pg_timeout
    store, rank, world_size = next(dist.rendezvous('env://', timeout=timeout))  # what init_process_group would do
    prefix = 'default_pg'
    if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True':
        # torchrun's agent keeps one store for the whole job and gives every restart its address, and the keys
        # that joining writes (the peers' addresses) have the same names in every attempt: a restart would read
        # the dead attempt's and connect to dead peers, or hang. The attempt's number keeps them apart.
        prefix = f"attempt{os.environ['TORCHELASTIC_RESTART_COUNT']}/{prefix}"
    dist.init_process_group('nccl' if cuda else 'gloo', store=dist.PrefixStore(prefix, store), rank=rank,
                            world_size=world_size, timeout=timeout, device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def lost_processes(e, timeout_s):
    """The one line that says what an error of the process group means (a process stopped, or the others waited
    for it longer than timeout_s); None for any other error."""
    text = str(e).strip()
    if not (isinstance(e, dist.DistError) or '/gloo/' in text):
        return None
    detail = re.sub(r'^\[[^]]*\] ', '', text.splitlines()[0] if text else type(e).__name__).split('. ')[0]
    return (f"the processes lost each other ({detail}): a process stopped (see its own error or exit code), or "
            f"the others waited for it more than dist_timeout_s={timeout_s:g} s; if one process may pause that long "
            "(a slow checkpoint save, say), raise --dist_timeout_s")


class Diverged(SystemExit):
    """The loss or the weights turned non-finite: the run stops with EXIT_DIVERGED, its checkpoint untouched."""


@contextmanager
def one_line_errors(timeout_s):
    """Every process's error as one line, said once: rank 0 says it, the others exit with its status alone. A
    bad shard met mid-run and a lost process become one line too. At the end the process group goes."""
    rank = int(os.environ.get('RANK', 0))  # torchrun's, known before the process group starts
    try:
        yield
    except ShardError as e:  # a bad shard met mid-run, when the loader opens it
        raise SystemExit(str(e) if rank == 0 else 1) from None
    except RuntimeError as e:  # a process that stopped, or one that the others waited for too long
        line = lost_processes(e, timeout_s)
        if line is None:
            raise
        raise SystemExit(line if rank == 0 else 1) from None
    except SystemExit as e:
        if rank != 0 and isinstance(e.code, str):
            raise SystemExit(EXIT_DIVERGED if isinstance(e, Diverged) else 1) from None
        raise
    finally:
        if dist.is_initialized():
            # DDP's reducer lives in reference cycles: free it while its process group still exists, or
            # freeing it as the interpreter shuts down can abort the process (seen with gloo)
            gc.collect()
            dist.destroy_process_group()


@contextmanager
def catch_stop_signals():
    """On SIGINT or SIGTERM, set the event it yields: the training loop finishes its step, saves and stops. The
    signal's old handler comes back at once, so a second Ctrl-C interrupts as usual, and all of them at the end."""
    stop, previous = threading.Event(), {}
    if hasattr(signal, 'SIGXFSZ'):  # past a file-size limit (ulimit -f) a write fails like on a full disk, not a kill
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def handler(signum, frame):
        stop.set()
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def torch_threads(n):
    """torch's CPU threads set to n, and as they were afterwards (for a caller that trains in its own process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -----------------------------------------------------------------------------
# Memory and threads


def check_memory(shapes, cfg, device, world_size):
    """Refuse a run that cannot fit this device's memory, before allocating anything. The estimate: float32
    weights, gradients and AdamW's two moments (16 bytes per parameter, sharded by fsdp), plus a rough
    activation term (what backward keeps per token: about 10 x n_embd + 2 x the FFN width per layer, and the
    logits), in the compute dtype. It leans low, so that it refuses only runs that surely cannot fit."""
    params = sum(p.numel() for p in shapes.parameters())
    state = 16 * params / (world_size if cfg.fsdp else 1)
    width = cfg.top_k * cfg.moe_ffn_hidden if cfg.n_experts else cfg.ffn_hidden
    per_token = cfg.n_layer * (10 * cfg.n_embd + 2 * width) + 3 * cfg.vocab_size
    activations = (2 if cfg.dtype == 'bfloat16' else 4) * cfg.micro_batch_size * cfg.block_size * per_token
    need = state + activations
    if device.type == 'cuda':
        free, where = torch.cuda.mem_get_info(device)[0], f"GPU {device.index or 0}"
        processes = 1
    else:
        free, where = available_ram(), "this machine's RAM"
        processes = int(os.environ.get('LOCAL_WORLD_SIZE', 1))  # the processes of this node share it
    gib = 2 ** 30
    if free is not None and need * processes > free:
        ways = "fsdp=True over more GPUs, " if device.type == 'cuda' else "a GPU, "
        raise SystemExit(
            f"this run needs about {need * processes / gib:.1f} GiB but {where} has {free / gib:.1f} GiB free: "
            f"{params / 1e9:.2f} B parameters take {state / gib:.1f} GiB with their gradients and AdamW state"
            + (f" per process ({processes} here)" if processes > 1 else '') + f", and micro_batch_size "
            f"{cfg.micro_batch_size} x block_size {cfg.block_size} about {activations / gib:.1f} GiB of activations; "
            f"use {ways}a smaller micro_batch_size (tokens_per_step stays the same), or a smaller model")
    if device.type == 'cpu' and (cfg.dtype == 'bfloat16' or cfg.compile):
        size = f"a {params / 1e9:.2f} B-parameter model, " if params > 1e8 else ''
        print(f"warning: GPU settings on the CPU ({size}dtype={cfg.dtype}, compile={cfg.compile}): this runs, but "
              "slowly; on a CPU prefer --dtype=float32 --compile=False and a small model", flush=True)


def available_ram():
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None when unknown."""
    try:
        with open('/proc/meminfo') as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:'))
    except (OSError, StopIteration, ValueError):
        try:
            return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (ValueError, OSError, AttributeError):
            return None


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


def cpu_threads():
    """torch's threads: OMP_NUM_THREADS when set; else the cores that other work leaves idle (the 1-minute load
    average, read before this run adds to it), at least 1. Threads beyond the idle cores fight the other work
    for them: with a 2-core machine busy with other jobs, 2 threads made the quick start 4 to 10x slower than 1."""
    if os.environ.get('OMP_NUM_THREADS'):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    busy = round(os.getloadavg()[0]) if hasattr(os, 'getloadavg') else 0
    return max(1, cores - busy)


# -----------------------------------------------------------------------------
# Figures and results


def pyplot():
    """matplotlib.pyplot for drawing PNGs, or None: matplotlib is optional, the numbers come without it."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use('Agg')  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi):
    """Save a figure as a PNG, written whole (atomic_write), so a reader never sees half a picture."""
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=dpi)
    atomic_write(path, png.getvalue())


def write_results(prefix, markdown, report):
    """A benchmark's results (bench.py's, sass.py's): <prefix>.md, its tables, and <prefix>.json, every figure
    and the environment; each file written whole."""
    os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
    atomic_write(prefix + '.md', markdown.encode())
    atomic_write(prefix + '.json', (json.dumps(report, indent=1) + '\n').encode())


# -----------------------------------------------------------------------------
# Learning-rate grids


def bracket(losses, chosen, sd):
    """How an lr grid (lr -> one run's final loss) brackets its chosen lr, per side: {'downwards': ...,
    'upwards': ...}. Two single-seed runs differ by sqrt(2) seed SDs (sd) from noise alone, so an lr is clearly
    worse than the chosen one only by more than that. 'bracketed': the immediate neighbour on that side is clearly
    worse; 'tied': the neighbour is not, but an lr beyond it is, so the best lr lies inside the grid, between the
    chosen lr and that one, unresolved; 'open': no lr on that side is clearly worse (or there is none), so the
    best lr may lie outside the grid."""
    lrs = sorted(losses)
    i = lrs.index(chosen)
    sides = {}
    for side, beyond in (('downwards', lrs[:i][::-1]), ('upwards', lrs[i + 1:])):  # nearest first
        worse = [losses[lr] > losses[chosen] + math.sqrt(2) * sd for lr in beyond]
        sides[side] = 'bracketed' if worse[:1] == [True] else 'tied' if any(worse) else 'open'
    return sides
