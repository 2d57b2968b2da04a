"""
Train a GPT with PolyCom activations: on a laptop CPU, one GPU, many GPUs or nodes (DDP), or sharded (FSDP2).

    python train.py                                        # the quick start: a small PolyNorm model, a few CPU minutes
    python train.py config/dense_110m.py --activation=swiglu --max_steps=2000
    torchrun --standalone --nproc_per_node=8 train.py config/dense_1b_polynorm.py
    python train.py <the same arguments> --init_from=resume   # continue from out_dir's checkpoint

Settings come from the defaults below, then config files (plain Python assignments), then --key=value flags
(--key value works too), later ones winning; `python train.py --help` lists every key with its meaning.
The story, top to bottom:
  1. config: what was asked for               2. settings: every automatic choice, made once
  3. processes and devices                    4. data
  5. model                                    6. optimizer and schedule
  7. checkpoints and logs                     8. the training loop: main() sets up, train() steps
"""

import ast
import difflib
import gc
import glob
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# 1. Config (plain Python, no torch: `--help` and a mistyped key answer at once)

# The model's keys and defaults are GPTConfig's (model.py). The quick start replaces a few of them: GPTConfig's
# defaults are a small GPU model (6 x 384, context 256), for whoever builds a GPT; `python train.py` with no
# arguments must train in a few CPU minutes. It also turns act_checkpointing off: recomputing PolyNorm in
# backward only saves memory, which a small model does not need. A comment here is the key's --help.
QUICK_START_MODEL = dict(
    block_size=128,
    vocab_size=None,  # None: the data's vocabulary (meta.json), rounded up to a multiple of 64
    n_layer=4,  # transformer blocks
    n_head=4,  # attention heads
    n_embd=128,  # the residual stream's width
    ffn_hidden=512,
    moe_ffn_hidden=512,
    act_checkpointing=False,
)

# The training keys. Their defaults are the quick start: 1000 steps of 2,048 tokens, a few minutes on two CPU
# cores, taking the byte-level loss from 5.6 to about 2. The comment on each line is its --help.
TRAINING = dict(
    # data and output
    dataset='stdlib',  # shards in data/<dataset>/, made by data/<dataset>/prepare.py (stdlib: made on demand)
    data_dir=None,  # None: data/<dataset> beside this file
    out_dir='out',  # checkpoint (ckpt.pt, or ckpt/ with fsdp) and log.jsonl
    init_from='scratch',  # 'scratch' or 'resume' (from out_dir's checkpoint)
    overwrite=False,  # True: a scratch run may replace the checkpoint already in out_dir
    # batch: tokens_per_step = micro_batch_size * block_size * processes * gradient accumulation steps
    tokens_per_step=2048,  # tokens in one optimizer step, over all processes
    micro_batch_size=16,  # sequences per process per forward pass
    # AdamW, linear warmup, cosine decay to min_lr at max_steps
    learning_rate=3e-3,  # peak learning rate, after warmup
    min_lr=3e-4,  # the learning rate at max_steps
    warmup_steps=100,  # steps of linear warmup from 0
    max_steps=1000,  # training steps; the cosine schedule ends here
    stop_step=None,  # stop early at this step with a checkpoint (e.g. a job's time limit); the schedule is unchanged
    weight_decay=0.1,  # AdamW's, on matrices and embeddings only
    beta1=0.9,  # AdamW's first-moment decay, in [0, 1)
    beta2=0.95,  # AdamW's second-moment decay, in [0, 1)
    grad_clip=1.0,  # clip the gradient's global norm to this; 0 = no clipping
    # system
    device=None,  # None: 'cuda' when there is a GPU, else 'cpu'
    dtype=None,  # None: 'bfloat16' on GPUs that have it, else 'float32'
    compile=None,  # torch.compile the model; None: on CUDA only (on the CPU it compiles longer than it saves)
    fsdp=False,  # shard parameters, gradients and optimizer state with FSDP2 (launch with torchrun)
    threads=None,  # CPU threads per process; None: $OMP_NUM_THREADS if set, else the cores other work leaves idle
    seed=1337,  # the same seed gives the same initial weights and the same run
    peak_flops=None,  # the device's dense bf16 FLOP/s for MFU; None: looked up from the GPU's name
    # how often, in steps
    eval_interval=200,  # validation loss every this many steps, and at max_steps
    eval_steps=20,  # each evaluation reads eval_steps * tokens_per_step validation tokens
    log_interval=25,  # a log line every this many steps (and at step 1)
    ckpt_interval=200,  # a checkpoint every this many steps (and at the last)
    # downstream evaluation as training goes (data/tasks.py; eval.py scores a finished checkpoint the same way)
    task_interval=0,  # score `task` every this many steps and at max_steps, into log.jsonl; 0 = off
    task='hellaswag',  # 'hellaswag' (downloaded to data/hellaswag/ on first use) or a generic multiple-choice .jsonl
    task_limit=0,  # score only the first task_limit items; 0 = all
)


def documented_keys(path, name):
    """{key: (default, comment)} for the assignments inside `name` in a Python file: a dataclass's fields (like
    GPTConfig) or the keywords of a dict(...) (like TRAINING). The comment is the one on the key's line (for a
    dataclass field without one, the last comment line above it in the class); it is the key's meaning in
    --help. Read from the source, so that --help needs neither torch nor a second copy of the meanings."""
    with open(path) as f:
        source = f.read()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            block, items = node, [(s.target.id, s.value) for s in node.body if isinstance(s, ast.AnnAssign)]
            break
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', None) == name:
            block, items = node, [(k.arg, k.value) for k in node.value.keywords]
            break
    else:
        raise LookupError(f"no {name} in {path}")
    keys, heading = {}, ''
    start = block.lineno
    for key, value in items:
        for line in lines[start:value.lineno - 1]:  # whole comment lines since the previous key
            if line.strip().startswith('#'):
                heading = line.strip('# \t')
        own = lines[value.end_lineno - 1][value.end_col_offset:].partition('#')[2].strip()
        group = f"({heading})" if heading and isinstance(block, ast.ClassDef) else ''
        keys[key] = (ast.literal_eval(value), own or group)
        start = value.end_lineno
    return keys


MODEL_KEYS = documented_keys(os.path.join(HERE, 'model.py'), 'GPTConfig')
TRAINING_KEYS = documented_keys(os.path.abspath(__file__), 'TRAINING')
QUICK_START_KEYS = documented_keys(os.path.abspath(__file__), 'QUICK_START_MODEL')
DEFAULTS = {**{key: default for key, (default, _) in MODEL_KEYS.items()}, **QUICK_START_MODEL, **TRAINING}
# keys whose default is None take None or this type
OPTIONAL = {'vocab_size': int, 'data_dir': str, 'stop_step': int, 'device': str, 'dtype': str,
            'compile': bool, 'peak_flops': float, 'threads': int}
FLOAT32_MAX = 3.4028234663852886e38
CHOICES = {'init_from': ('scratch', 'resume'), 'device': (None, 'cpu', 'cuda'), 'dtype': (None, 'float32', 'bfloat16')}
RANGES = [  # (keys, test, what the test asks); None passes (see OPTIONAL)
    (('block_size', 'n_layer', 'n_head', 'n_embd', 'threads', 'tokens_per_step', 'micro_batch_size', 'max_steps', 'stop_step',
      'eval_interval', 'eval_steps', 'log_interval', 'ckpt_interval', 'learning_rate', 'peak_flops'),
     lambda v: v > 0, "positive"),
    (('warmup_steps', 'min_lr', 'weight_decay', 'grad_clip', 'task_interval', 'task_limit'), lambda v: v >= 0,
     "zero or positive"),
    (('beta1', 'beta2'), lambda v: 0 <= v < 1, "in [0, 1)"),
]


def usage():
    """--help: how to call, then every key with its default and meaning."""
    examples, settings = __doc__.split('\n\n')[1:3]
    settings = settings.split('\nThe story')[0]

    def rows(keys):
        return '\n'.join(f"  {key:<18} {DEFAULTS[key]!r:<12} {meaning(key)}" for key in keys)

    return (f"usage: python train.py [config.py ...] [--key=value ...]\n\n{examples}\n\n{settings}\n\n"
            f"training keys, default, meaning:\n{rows(TRAINING)}\n\n"
            f"model keys (GPTConfig in model.py, with the quick start's defaults):\n{rows(MODEL_KEYS)}")


def meaning(key):
    """The comment next to the key (train.py's, else model.py's), else the heading of its group in GPTConfig."""
    own = [keys[key][1] for keys in (TRAINING_KEYS, QUICK_START_KEYS) if key in keys and keys[key][1]]
    return own[0] if own else MODEL_KEYS[key][1]


def get_config(argv):
    """The run's settings as asked: DEFAULTS, then each config file in argv, then argv's flags."""
    if '-h' in argv or '--help' in argv:
        print(usage())
        sys.exit(0)
    config = dict(DEFAULTS)
    files, flags = [], []
    args = iter(argv)
    for arg in args:
        if not arg.startswith('--'):
            files.append(arg)
            continue
        key, eq, text = arg[2:].partition('=')
        if not eq:  # the argparse habit, --key value
            text = next(args, None)
            if text is None:
                raise SystemExit(f"{arg} has no value: write --{key}=VALUE, e.g. --max_steps=100")
        flags.append((key, text, arg))
    for path in files:
        if not os.path.isfile(path):
            raise SystemExit(f"config file {path!r} not found (arguments are config files or --key=value flags)")
        from model import read_config  # plain Python; model.py's import of torch is the cost, paid once
        for key, value in read_config(path).items():
            config[key] = checked(key, value, path)
    for key, text, arg in flags:
        config[key] = checked(key, parse_value(text), arg)
    check_ranges(config)
    return config


def parse_value(text):
    """A Python literal when it is one (3, 1e-3, True, None, 'x'), else the bare text as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def checked(key, value, where):
    """value, if it suits key (an int is fine where a float is wanted); a clear error otherwise."""
    if key not in DEFAULTS:
        close = difflib.get_close_matches(key, DEFAULTS, n=3, cutoff=0.6)
        guess = f"did you mean {' or '.join('--' + k for k in close)}? " if close else ''
        raise SystemExit(f"{where}: unknown key {key!r}; {guess}(python train.py --help lists every key)")
    want = OPTIONAL.get(key, type(DEFAULTS[key]))
    if value is None and key in OPTIONAL:
        return None
    if want is float and type(value) is int:
        value = float(value)
    if type(value) is not want:  # `type(...) is` because True is an int to isinstance
        optional = ' or None' if key in OPTIONAL else ''
        raise SystemExit(f"{where}: {key} must be {want.__name__}{optional}, got {value!r} ({type(value).__name__})")
    if want is float and not abs(value) <= FLOAT32_MAX:  # also False for NaN
        raise SystemExit(f"{where}: {key} must be a finite number (float32's range, as the optimizer's math), "
                         f"got {value!r}")
    return value


def check_ranges(config):
    for key, choices in CHOICES.items():
        if config[key] not in choices:
            raise SystemExit(f"{key} must be one of {choices}, got {config[key]!r}")
    for keys, test, wanted in RANGES:
        for key in keys:
            if config[key] is not None and not test(config[key]):
                raise SystemExit(f"{key} must be {wanted}, got {config[key]!r}")
    from common import model_config
    try:
        model_config(config)  # GPTConfig checks the model's own keys (activation, heads, experts...)
    except ValueError as e:
        raise SystemExit(str(e)) from None


# `python train.py --help` answers here, before the imports below load torch (a few seconds)
if __name__ == '__main__' and {'-h', '--help'} & set(sys.argv[1:]):
    print(usage())
    sys.exit(0)

import torch  # noqa: E402  (after --help, see above)
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from common import (atomic_save, checkpoint_path, find_checkpoint, finish_interrupted_save, fsync_dir,  # noqa: E402
                    join_processes, model_config, peak_flops, read_checkpoint)
from data.shards import ShardError, ShardLoader, atomic_write, read_meta  # noqa: E402
from data.tasks import evaluate_task, load_task  # noqa: E402
from model import GPT, RUNTIME_KEYS, summary  # noqa: E402

# -----------------------------------------------------------------------------
# 2. Settings: every automatic choice (a None above) made here, once, where it can be read


def resolve_settings(config, device, rank):
    """(cfg, meta): the run's settings with device, dtype, compile, threads, data_dir and vocab_size decided,
    and the dataset's meta.json. device is the one start_processes chose (it needs it first)."""
    cfg = SimpleNamespace(**config)
    cfg.device = device.type
    cfg.threads = config['threads'] or cpu_threads()
    bf16_ok = device.type == 'cpu' or torch.cuda.is_bf16_supported()
    cfg.dtype = config['dtype'] or ('bfloat16' if device.type == 'cuda' and bf16_ok else 'float32')
    if cfg.dtype == 'bfloat16' and not bf16_ok:
        raise SystemExit("this GPU has no bfloat16; use --dtype=float32")
    cfg.compile = device.type == 'cuda' if config['compile'] is None else config['compile']
    cfg.data_dir = config['data_dir'] or os.path.join(HERE, 'data', cfg.dataset)
    meta = prepare_data(cfg.data_dir, cfg.dataset, rank)
    padded = -(-meta['vocab_size'] // 64) * 64  # a multiple of 64 makes faster matmuls
    cfg.vocab_size = config['vocab_size'] or padded
    if cfg.vocab_size < meta['vocab_size']:
        raise SystemExit(f"vocab_size={cfg.vocab_size} is smaller than the data's {meta['vocab_size']} "
                         f"({cfg.data_dir}/meta.json); use --vocab_size={padded}, or None for automatic")
    return cfg, meta


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
# 3. Processes and devices


def start_processes(config):
    """(rank, world_size, device) of this process; under torchrun it joins the process group first."""
    kind = config['device'] or ('cuda' if torch.cuda.is_available() else 'cpu')
    if kind == 'cuda' and not torch.cuda.is_available():
        raise SystemExit("device='cuda' but torch sees no GPU; use --device=cpu")
    if kind == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 for whatever matmuls stay in float32
    launched = 'RANK' in os.environ  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for every process
    if config['fsdp'] and not launched:
        raise SystemExit("fsdp=True shards the model over processes: launch with torchrun "
                         "(e.g. torchrun --standalone --nproc_per_node=8 train.py ...), or use --fsdp=False")
    return join_processes(kind)


def gradient_accumulation(cfg, world_size):
    """Micro-steps per step, so that every step trains on exactly tokens_per_step tokens."""
    per_pass = cfg.micro_batch_size * cfg.block_size * world_size  # tokens in one forward over all processes
    if cfg.tokens_per_step % per_pass:
        below, above = cfg.tokens_per_step // per_pass * per_pass, (cfg.tokens_per_step // per_pass + 1) * per_pass
        sizes = [b for b in range(1, cfg.tokens_per_step // (cfg.block_size * world_size) + 1)
                 if cfg.tokens_per_step % (b * cfg.block_size * world_size) == 0]
        raise SystemExit(
            f"tokens_per_step={cfg.tokens_per_step} is not a multiple of micro_batch_size * block_size * processes"
            f" = {cfg.micro_batch_size} * {cfg.block_size} * {world_size} = {per_pass}; use tokens_per_step="
            + (f"{below} or " if below else '') + f"{above}"
            + (f", or micro_batch_size in {sizes}" if sizes else ''))
    return cfg.tokens_per_step // per_pass


def barrier():
    if dist.is_initialized():
        dist.barrier()


# -----------------------------------------------------------------------------
# 4. Data


def prepare_data(data_dir, dataset, rank):
    """The dataset's meta.json as a dict, preparing the offline stdlib corpus first if it is missing."""
    if dataset == 'stdlib' and data_dir == os.path.join(HERE, 'data', 'stdlib') \
            and not os.path.exists(os.path.join(data_dir, 'meta.json')):
        # the only corpus that needs no download, so the quick start can make it without being asked
        if rank == 0:
            print("preparing the stdlib corpus (once, a few seconds): python data/stdlib/prepare.py", flush=True)
            from data.stdlib import prepare
            prepare.main([])
        barrier()
    try:
        return read_meta(data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None


def make_loaders(cfg, meta, rank, world_size):
    """(train, val) loaders; each process reads its own rows of every step's span of tokens. Each shard is
    checked once against the data's own vocabulary (meta.json), as it opens."""
    loaders = []
    for split in ('train', 'val'):
        pattern = os.path.join(glob.escape(cfg.data_dir), f'*_{split}_*.bin')
        try:
            loaders.append(ShardLoader(pattern, cfg.micro_batch_size, cfg.block_size, rank, world_size,
                                       meta['vocab_size']))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e)) from None
    return loaders


# -----------------------------------------------------------------------------
# 5. Model


def build_model(cfg, device, rank, world_size):
    """(raw model, the model to call): raw holds the weights to save; the other is raw, or DDP around it."""
    model_cfg = model_config(vars(cfg))
    with torch.device('meta'):  # shapes only, no memory yet
        model = GPT(model_cfg)
    check_memory(model, cfg, device, world_size)
    if not cfg.fsdp:
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        with torch.device(device):  # built where it runs: the big models take seconds, not minutes, on a GPU
            model = GPT(model_cfg)
    if cfg.compile:
        # block by block and in place: the layers share one compiled graph (a fraction of a whole-model
        # compile's time), FSDP2's hooks run between the compiled blocks, and the weights' names stay plain
        for block in model.blocks:
            block.compile()
    if cfg.fsdp:
        shard_model(model, cfg, world_size)  # still on the meta device: no process ever holds the whole model
        model.to_empty(device=device)  # each process allocates its own shards
        model.init_weights()  # buffers, norms and PolyCom's scalars; the random matrices come next
        load_initial_weights(model, cfg, rank)
        return model, model
    if world_size > 1:
        # no find_unused_parameters, even for an MoE whose loop path skips the experts that get no tokens: each
        # layer's experts are slices of one stacked parameter, which gets a gradient (zero rows) all the same
        return model, DDP(model, device_ids=[device.index] if device.type == 'cuda' else None)
    return model, model


def load_initial_weights(model, cfg, rank):
    """Give the sharded model the initial weights a single process would start from: rank 0 builds them in
    its CPU memory and each process receives its shards. Drawing them on the shards themselves would depend on
    the sharding (and on the CPU, where DTensor has no sharded random numbers, repeat the same draws on every
    rank); this way any number of processes starts from the same weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    full = {}
    if rank == 0:
        torch.manual_seed(cfg.seed)
        full = GPT(model_config(vars(cfg))).state_dict()
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full


def shard_model(model, cfg, world_size):
    """FSDP2, in place: each Block is one unit whose weights are gathered just for its forward and backward,
    then the root takes what is left (embeddings, final norm, output head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(cfg.device, (world_size,))  # gloo needs the explicit CPU mesh
    # bf16 compute on the gathered copies, float32 master weights and gradient reductions
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if cfg.dtype == 'bfloat16' else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)


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


def autocast(cfg):
    """The forward pass's precision: FSDP casts through its policy, the rest runs under bf16 autocast."""
    if cfg.dtype == 'bfloat16' and not cfg.fsdp:
        return torch.autocast(cfg.device, dtype=torch.bfloat16)
    return nullcontext()


# -----------------------------------------------------------------------------
# 6. Optimizer and schedule


def make_optimizer(raw, cfg):
    return torch.optim.AdamW(raw.optim_groups(cfg.weight_decay), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=cfg.device == 'cuda')  # one kernel for all parameters


def lr_at(step, cfg):
    """Learning rate for training step `step` (from 0): linear warmup, then cosine decay to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def clip_gradients(params, cfg):
    """Clip the gradients' global norm to grad_clip (if set) and return that norm, before clipping, as a tensor
    on the device (no wait for the device here)."""
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float('inf')  # inf: measure only
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, 'full_tensor') else norm  # FSDP's norm is a DTensor


# -----------------------------------------------------------------------------
# 7. Checkpoints and logs (the format, the atomic save and the readers are in common.py)


def prepare_out_dir(cfg, rank):
    """Make out_dir ready for this run: finish or clear what a killed save left (rank 0), and refuse a scratch
    run that would replace a checkpoint, unless told to (every rank: they all stop together)."""
    if rank == 0:
        os.makedirs(cfg.out_dir, exist_ok=True)
        for line in finish_interrupted_save(cfg.out_dir):
            print(line, flush=True)
        tmp_log = os.path.join(cfg.out_dir, 'log.jsonl.tmp')
        if os.path.exists(tmp_log):
            os.remove(tmp_log)
    barrier()
    if cfg.init_from == 'scratch' and not cfg.overwrite:
        for fsdp in (False, True):
            path = find_checkpoint(cfg.out_dir, fsdp)
            if path:
                try:
                    held = f"a run at step {read_checkpoint(path)['step']}"
                except ValueError:
                    held = "an unreadable checkpoint"
                raise SystemExit(f"{path} holds {held}: continue it with --init_from=resume, replace it with "
                                 "--overwrite=True, or train into another --out_dir")


def save_checkpoint(cfg, raw, optimizer, progress, interval, train_loader, meta, rank):
    params = [p.to_local() if hasattr(p, 'to_local') else p for p in raw.parameters()]  # FSDP: this rank's shards
    finite = torch.stack([torch.isfinite(p).all() for p in params]).all().float()
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite.item():  # e.g. a learning rate so large that the update overflowed; the loss is not NaN yet
        raise SystemExit(f"step {progress['step']}: the update made some weights inf or NaN; not saved. The last "
                         f"checkpoint in {cfg.out_dir} is untouched: lower learning_rate, then resume with "
                         "--init_from=resume")
    path = checkpoint_path(cfg.out_dir, cfg.fsdp)
    extra = {**progress, 'interval': interval, 'loader': train_loader.state_dict(), 'rng': rng_state(),
             'config': vars(cfg), 'meta': meta}
    if not cfg.fsdp:
        if rank == 0:
            atomic_save({'model': raw.state_dict(), 'optimizer': optimizer.state_dict(), **extra}, path)
        return
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optim_state = get_state_dict(raw, optimizer)
    tmp = path + '.tmp'
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run that died mid-save
    barrier()
    dcp.save({'model': model_state, 'optimizer': optim_state}, checkpoint_id=tmp)  # returns once all shards are written
    if rank == 0:
        atomic_save(extra, os.path.join(tmp, 'extra.pt'))  # written last: its presence marks the save complete
        # a directory cannot be replaced in one rename: between the two, the old one survives as ckpt.old
        if os.path.exists(path):
            os.replace(path, path + '.old')
        os.replace(tmp, path)
        fsync_dir(cfg.out_dir)
        shutil.rmtree(path + '.old', ignore_errors=True)
    barrier()


def rng_state():
    state = {'python': random.getstate(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


def resume(cfg, raw, optimizer, train_loader):
    """Restore the run saved in out_dir; returns its progress {'step', 'tokens', 'train_time_s'} and its log
    interval's running sums."""
    path = checkpoint_path(cfg.out_dir, cfg.fsdp)
    if not os.path.exists(path):
        other = find_checkpoint(cfg.out_dir, not cfg.fsdp)
        hint = (f"{other} is there, saved with fsdp={not cfg.fsdp}: resume with --fsdp={not cfg.fsdp}"
                if other else "train from scratch with --init_from=scratch")
        raise SystemExit(f"init_from='resume' but there is no checkpoint at {path}; {hint}")
    try:
        ckpt = read_checkpoint(path)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    check_same_model(ckpt['config'], vars(cfg), path)
    if cfg.fsdp:
        from torch.distributed import checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_state, optim_state = get_state_dict(raw, optimizer)  # this run's layout: dcp reshards into it
        state = {'model': model_state, 'optimizer': optim_state}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(raw, optimizer, model_state_dict=state['model'], optim_state_dict=state['optimizer'])
    else:
        raw.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
    train_loader.load_state_dict(ckpt['loader'])
    set_rng_state(ckpt['rng'])
    # checkpoints from before train_time_s and interval were kept start them afresh
    progress = {'step': ckpt['step'], 'tokens': ckpt['tokens'], 'train_time_s': ckpt.get('train_time_s', 0.0)}
    return progress, ckpt.get('interval', new_interval())


def check_same_model(saved, current, path):
    diffs = [f"{key}={saved[key]!r} (now {current[key]!r})" for key in MODEL_KEYS
             if key not in RUNTIME_KEYS and key in saved and saved[key] != current[key]]
    if diffs:
        raise SystemExit(f"{path} holds a different model: it has {', '.join(diffs)}; "
                         "resume with the config and flags that started it")


def trim_log(path, step):
    """Keep the log's records up to `step`: a run that died after its last checkpoint logged steps that the
    resumed run logs again. A line cut by a kill goes silently; a whole line that is not JSON, with a warning."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.endswith('\n'):
                continue  # the last line, cut short by a kill
            try:
                record = json.loads(line)
                keep = record['step'] <= step
            except (json.JSONDecodeError, KeyError, TypeError):
                print(f"warning: {path} line {n} is not a log record; dropped it: {line.strip()[:80]!r}", flush=True)
                continue
            if keep:
                kept.append(line)
    atomic_write(path, ''.join(kept).encode())


# the step numbers each log line averages over its interval (the steps since the last multiple of log_interval)
MEANS = ('loss', 'lm', 'lb', 'z', 'grad_norm')


def new_interval():
    """The running sums of MEANS since the last log boundary: saved in checkpoints, so that a resumed run logs
    the same means as an uninterrupted one."""
    return {'steps': 0, 'sums': [0.0] * len(MEANS)}


def append_log(path, record):
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def format_duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def log_line(step, end_step, cfg, means, lr, dt, tok_per_s, mfu):
    aux = f" (lm {means['lm']:.4f} lb {means['lb']:.4f} z {means['z']:.4f})" if cfg.n_experts else ''
    speed = (f"{tok_per_s:,.0f} tok/s | MFU {f'{100 * mfu:.1f}%' if mfu else 'n/a'} | {1000 * dt:.0f} ms | "
             f"ETA {format_duration(dt * (end_step - step))}" if tok_per_s else
             f"{1000 * dt:.0f} ms (first step: includes compilation/warm-up)")
    return (f"step {step}/{cfg.max_steps} | loss {means['loss']:.4f}{aux} | lr {lr:.2e} | "
            f"grad {means['grad_norm']:.3f} | {speed}")


# -----------------------------------------------------------------------------
# 8. The training loop


@torch.no_grad()
def evaluate(model, loader, cfg, batches, world_size):
    """Mean LM loss on the first `batches` validation batches of every process: the same tokens every time,
    whatever the number of processes and the micro-batch size, so that runs compare."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=cfg.device)
    for _ in range(batches):
        x, y = (t.to(cfg.device) for t in loader.next_batch())
        with autocast(cfg):
            _, losses = model(x, y)
        total += losses['lm']  # the language-modelling loss alone, comparable between dense and MoE models
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    return total.item() / (batches * world_size)


def load_eval_task(cfg, meta):
    """The multiple-choice task scored every task_interval steps, read and tokenized once; None when off."""
    if cfg.task_interval <= 0:
        return None
    try:
        return load_task(cfg.task, meta, cfg.block_size, limit=cfg.task_limit or None)
    except (OSError, ValueError, RuntimeError) as e:
        raise SystemExit(f"task={cfg.task!r}: {e}") from None


def forward_backward(model, batches, cfg):
    """The gradients of one step, from the micro-batches `batches` ([(x, y)]); returns this process's losses,
    averaged over them, as a tensor [loss, lm, lb, z] left on the device (reading it would wait for the device)."""
    ddp = isinstance(model, DDP)
    losses_sum = torch.zeros(4, device=cfg.device)
    for micro, (x, y) in enumerate(batches):
        # DDP averages gradients over processes in backward; only the last micro-step needs it. FSDP
        # reduces every micro-step instead: keeping whole gradients would cost the memory it saves.
        sync = not ddp or micro == len(batches) - 1
        with nullcontext() if sync else model.no_sync():
            with autocast(cfg):
                _, losses = model(x, y)
            (losses['loss'] / len(batches)).backward()
        losses_sum += torch.stack([losses['loss'], losses['lm'], losses['lb'], losses['z']]).detach()
    return losses_sum / len(batches)


def read_step(losses, norm, stop, world_size):
    """The step's numbers on the host, and whether any process was asked to stop, in one device-to-host copy
    (the step's only wait for the device). The losses are averaged over processes by one all-reduce, which
    carries each process's stop vote beside them."""
    shared = torch.cat([losses, torch.tensor([float(stop.is_set())], device=losses.device)])  # loss, lm, lb, z, stop
    if world_size > 1:
        dist.all_reduce(shared)
        shared[:4] /= world_size
    loss, lm, lb, z, stop_votes, grad_norm = torch.cat([shared, norm.view(1).to(shared)]).tolist()
    return {'loss': loss, 'lm': lm, 'lb': lb, 'z': z, 'grad_norm': grad_norm}, stop_votes > 0


def check_finite(stats, step, cfg):
    """Stop before an update that would take the weights to NaN; the loss's parts before their sum, to name
    the culprit."""
    for name in ('lm', 'lb', 'z', 'loss', 'grad_norm'):
        if not math.isfinite(stats[name]):
            raise SystemExit(f"step {step}: {name} is {stats[name]}; stopped before updating the weights. The last "
                             f"checkpoint in {cfg.out_dir} is untouched: lower learning_rate or raise warmup_steps, "
                             "then resume with --init_from=resume")


def catch_stop_signals():
    """On SIGINT or SIGTERM, set the returned event: the loop finishes its step, saves and stops. The
    signal's old handler comes back at once, so a second Ctrl-C interrupts as usual."""
    stop = threading.Event()
    previous = {}

    def handler(signum, frame):
        stop.set()
        signal.signal(signum, previous[signum])

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return stop, previous


def main(argv=None):
    rank = int(os.environ.get('RANK', 0))  # torchrun's, known before the process group starts
    stop, previous_handlers = catch_stop_signals()
    threads = torch.get_num_threads()
    try:
        config = get_config(sys.argv[1:] if argv is None else argv)
        rank, world_size, device = start_processes(config)
        cfg, meta = resolve_settings(config, device, rank)
        torch.set_num_threads(cfg.threads)
        train(cfg, meta, rank, world_size, device, stop)
    except ShardError as e:  # a bad shard met mid-run, when the loader opens it
        raise SystemExit(str(e)) from None
    except SystemExit as e:
        if rank != 0 and isinstance(e.code, str):
            raise SystemExit(1) from None  # every process stops; rank 0 says why, once
        raise
    finally:
        torch.set_num_threads(threads)  # as it was, for a caller that runs main() in its own process
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        if dist.is_initialized():
            # DDP's reducer lives in reference cycles: free it while its process group still exists, or
            # freeing it as the interpreter shuts down can abort the process (seen with gloo)
            gc.collect()
            dist.destroy_process_group()


def train(cfg, meta, rank, world_size, device, stop):
    """Data, model and optimizer, then steps until max_steps (or stop_step, or a signal), with logs,
    evaluations and checkpoints along the way."""
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    grad_accum = gradient_accumulation(cfg, world_size)
    prepare_out_dir(cfg, rank)
    train_loader, val_loader = make_loaders(cfg, meta, rank, world_size)
    say("config:\n" + '\n'.join(f"  {key} = {value!r}" for key, value in vars(cfg).items()))
    say(summary(model_config(vars(cfg))))
    say(f"{world_size} process(es) on {device.type}, {cfg.threads} CPU thread(s) each; {grad_accum} micro-step(s) "
        f"of {cfg.micro_batch_size} x {cfg.block_size} tokens per process: {cfg.tokens_per_step:,} tokens per step")
    raw, model = build_model(cfg, device, rank, world_size)
    optimizer = make_optimizer(raw, cfg)

    # steps done, tokens trained on, and seconds spent in training steps (not evaluating, saving, or the first
    # step after each start, which compiles and warms up); all three go on across resumes
    progress = {'step': 0, 'tokens': 0, 'train_time_s': 0.0}
    interval = new_interval()
    log_path = os.path.join(cfg.out_dir, 'log.jsonl')
    if cfg.init_from == 'resume':
        progress, interval = resume(cfg, raw, optimizer, train_loader)
        say(f"resumed from {checkpoint_path(cfg.out_dir, cfg.fsdp)} at step {progress['step']}")
        if rank == 0:
            trim_log(log_path, progress['step'])
    elif rank == 0 and os.path.exists(log_path):
        os.remove(log_path)  # a new run, a new log

    flops_per_token = raw.flops_per_token(cfg.block_size)
    peak = cfg.peak_flops or (peak_flops(torch.cuda.get_device_name(device)) if device.type == 'cuda' else None)
    end_step = min(cfg.max_steps, cfg.stop_step or cfg.max_steps)
    if progress['step'] >= end_step:
        say(f"nothing to do: the run is at step {progress['step']}, max_steps={cfg.max_steps}; raise max_steps "
            "to train on")
        return
    task = load_eval_task(cfg, meta)
    say(f"training steps {progress['step'] + 1}..{end_step}; Ctrl-C saves a checkpoint and stops\n"
        "(loss and grad: means over the steps since the previous line; tok/s, MFU and ms: the same steps, less the "
        "first after each start, which is timed alone: it includes compilation/warm-up)")
    params = list(raw.parameters())
    warm_up = True  # the first step of this process
    timed_s, timed_steps = 0.0, 0  # steady steps since the last line
    while progress['step'] < end_step:
        started = time.perf_counter()
        lr = lr_at(progress['step'], cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr
        batches = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
                   for x, y in (train_loader.next_batch() for _ in range(grad_accum))]
        losses = forward_backward(model, batches, cfg)
        norm = clip_gradients(params, cfg)
        stats, stopping = read_step(losses, norm, stop, world_size)  # the step's one wait for the device
        check_finite(stats, progress['step'] + 1, cfg)  # before the update: the weights and checkpoints stay good
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        progress['step'] += 1
        progress['tokens'] += cfg.tokens_per_step
        step = progress['step']
        if not warm_up:
            progress['train_time_s'] += seconds
            timed_s, timed_steps = timed_s + seconds, timed_steps + 1
        interval['steps'] += 1
        interval['sums'] = [total + stats[name] for total, name in zip(interval['sums'], MEANS)]

        boundary = step % cfg.log_interval == 0
        if warm_up or boundary or step == end_step:
            means = {name: total / interval['steps'] for total, name in zip(interval['sums'], MEANS)}
            # tokens/s and MFU over the steady steps since the last line; none yet: the first step's ms alone
            dt = timed_s / timed_steps if timed_steps else seconds
            tok_per_s = cfg.tokens_per_step / dt if timed_steps else None
            mfu = flops_per_token * tok_per_s / (peak * world_size) if peak and tok_per_s else None
            say(log_line(step, end_step, cfg, means, lr, dt, tok_per_s, mfu), flush=True)
            if rank == 0 and (step == 1 or boundary or step == end_step):
                append_log(log_path, {'step': step, 'tokens': progress['tokens'], **means, 'lr': lr,
                                      'tok_per_s': tok_per_s, 'mfu': mfu, 'dt_ms': 1000 * dt,
                                      'train_time_s': progress['train_time_s']})
            timed_s, timed_steps = 0.0, 0
        if boundary:
            interval = new_interval()
        warm_up = False

        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val_loss = evaluate(model, val_loader, cfg, cfg.eval_steps * grad_accum, world_size)
            say(f"step {step}: val loss {val_loss:.4f}")
            if rank == 0:
                append_log(log_path, {'step': step, 'tokens': progress['tokens'], 'val_loss': val_loss})
        if task and (step % cfg.task_interval == 0 or step == cfg.max_steps):
            with autocast(cfg):  # raw: without DDP's hooks (with FSDP, raw is the sharded model)
                result = evaluate_task(raw, task, cfg.micro_batch_size)  # micro_batch_size items per forward pass
            say(f"step {step}: {task['name']} acc {result['acc']:.4f} acc_norm {result['acc_norm']:.4f} "
                f"(n={result['n']})")
            if rank == 0:
                append_log(log_path, {'step': step, 'tokens': progress['tokens'], 'eval_task': task['name'],
                                      **{key: result[key] for key in ('acc', 'acc_norm', 'n')}})
        if stopping or step % cfg.ckpt_interval == 0 or step == end_step:
            save_checkpoint(cfg, raw, optimizer, progress, interval, train_loader, meta, rank)
            say(f"saved {checkpoint_path(cfg.out_dir, cfg.fsdp)} at step {step}")
        if stopping:
            say(f"stopped by a signal at step {step}; continue with the same command and --init_from=resume")
            return
    say(f"done; sample from it with: python sample.py --out_dir={cfg.out_dir}")


if __name__ == '__main__':
    main()
