"""
Train a GPT with PolyCom activations: on a laptop CPU, one GPU, many GPUs or nodes (DDP), or sharded (FSDP2).

    python train.py                                        # the quick start: a small PolyNorm model, a few CPU minutes
    python train.py config/dense_110m.py --activation=swiglu --max_steps=2000
    torchrun --standalone --nproc_per_node=8 train.py config/dense_1b_polynorm.py
    python train.py <the same arguments> --init_from=resume   # continue from out_dir's checkpoint

Settings come from the defaults below, then config files (plain Python assignments), then --key=value
flags, later ones winning; `python train.py --help` lists every key. The story, top to bottom:
  1. config                2. devices and processes     3. data
  4. model                 5. optimizer and schedule    6. checkpoints and logs
  7. the training loop: main() sets up and cleans up around train()
"""

import ast
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
from dataclasses import asdict, fields
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from data.shards import ShardLoader, atomic_write, read_meta
from common import atomic_save, checkpoint_path, model_config, peak_flops, read_checkpoint
from model import GPT, RUNTIME_KEYS, GPTConfig, read_config, summary

HERE = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# 1. Config

# The model keys are GPTConfig's; these replace its defaults with a model small enough for a laptop CPU.
QUICK_START_MODEL = dict(
    block_size=128,
    vocab_size=None,  # None: the data's vocabulary (meta.json), rounded up to a multiple of 64
    n_layer=4,
    n_head=4,
    n_embd=128,
    ffn_hidden=512,
    moe_ffn_hidden=512,
    act_checkpointing=False,  # recomputing PolyNorm only saves memory, which a small model does not need
)

# The training keys. Their defaults are the quick start: 1000 steps of 2,048 tokens, about 3 minutes on two
# CPU cores, taking the byte-level loss from 5.6 to about 2.
TRAINING = dict(
    # data and output
    dataset='stdlib',  # shards in data/<dataset>/, made by data/<dataset>/prepare.py (stdlib: made on demand)
    data_dir=None,  # None: data/<dataset> beside this file
    out_dir='out',  # checkpoint (ckpt.pt, or ckpt/ with fsdp) and log.jsonl
    init_from='scratch',  # 'scratch' or 'resume' (from out_dir's checkpoint)
    # batch: tokens_per_step = micro_batch_size * block_size * processes * gradient accumulation steps
    tokens_per_step=2048,
    micro_batch_size=16,  # sequences per process per forward pass
    # AdamW, linear warmup, cosine decay to min_lr at max_steps
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_steps=100,
    max_steps=1000,
    stop_step=None,  # stop early at this step with a checkpoint (e.g. a job's time limit); the schedule is unchanged
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,  # clip the gradient's global norm to this; 0 = no clipping
    # system
    device=None,  # None: 'cuda' when there is a GPU, else 'cpu'
    dtype=None,  # None: 'bfloat16' on GPUs that have it, else 'float32'
    compile=None,  # torch.compile the model; None: on CUDA only (on the CPU it compiles longer than it saves)
    fsdp=False,  # shard parameters, gradients and optimizer state with FSDP2 (launch with torchrun)
    seed=1337,
    peak_flops=None,  # the device's dense bf16 FLOP/s for MFU; None: looked up from the GPU's name
    # how often, in steps
    eval_interval=200,
    eval_steps=20,  # each evaluation reads eval_steps * tokens_per_step validation tokens
    log_interval=25,
    ckpt_interval=200,
)

DEFAULTS = {**asdict(GPTConfig()), **QUICK_START_MODEL, **TRAINING}
# keys whose default is None take None or this type
OPTIONAL = {'vocab_size': int, 'data_dir': str, 'stop_step': int, 'device': str, 'dtype': str,
            'compile': bool, 'peak_flops': float}
CHOICES = {'init_from': ('scratch', 'resume'), 'device': (None, 'cpu', 'cuda'), 'dtype': (None, 'float32', 'bfloat16')}
POSITIVE = ('block_size', 'n_layer', 'tokens_per_step', 'micro_batch_size', 'max_steps', 'stop_step',
            'eval_interval', 'eval_steps', 'log_interval', 'ckpt_interval', 'learning_rate')
NON_NEGATIVE = ('warmup_steps', 'min_lr', 'weight_decay', 'grad_clip')


def get_config(argv):
    """The run's settings: DEFAULTS, then each config file in argv, then argv's --key=value flags."""
    if any(arg in ('-h', '--help') for arg in argv):
        print(__doc__.split('\n\n')[1] + '\n\nkeys and their defaults:\n' + describe_keys())
        sys.exit(0)
    config = dict(DEFAULTS)
    files = [arg for arg in argv if not arg.startswith('--')]
    flags = [arg for arg in argv if arg.startswith('--')]
    for path in files:
        if not os.path.isfile(path):
            raise SystemExit(f"config file {path!r} not found (arguments are config files or --key=value flags)")
        for key, value in read_config(path).items():
            config[key] = checked(key, value, path)
    for flag in flags:
        key, eq, text = flag[2:].partition('=')
        if not eq:
            raise SystemExit(f"{flag}: flags take the form --key=value, e.g. --max_steps=100")
        config[key] = checked(key, parse_value(text), flag)
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
        raise SystemExit(f"{where}: unknown key {key!r}; the valid keys and their defaults are:\n{describe_keys()}")
    want = OPTIONAL.get(key, type(DEFAULTS[key]))
    if value is None and key in OPTIONAL:
        return None
    if want is float and type(value) is int:
        return float(value)
    if type(value) is not want:  # `type(...) is` because True is an int to isinstance
        optional = ' or None' if key in OPTIONAL else ''
        raise SystemExit(f"{where}: {key} must be {want.__name__}{optional}, got {value!r} ({type(value).__name__})")
    return value


def describe_keys():
    return '\n'.join(f"  {key} = {value!r}" for key, value in DEFAULTS.items())


def check_ranges(config):
    for key, choices in CHOICES.items():
        if config[key] not in choices:
            raise SystemExit(f"{key} must be one of {choices}, got {config[key]!r}")
    for key in POSITIVE:
        if config[key] is not None and config[key] <= 0:
            raise SystemExit(f"{key} must be positive, got {config[key]!r}")
    for key in NON_NEGATIVE:
        if config[key] < 0:
            raise SystemExit(f"{key} must be zero or positive, got {config[key]!r}")
    try:
        model_config(config)  # GPTConfig checks the model's own keys (activation, heads, experts...)
    except ValueError as e:
        raise SystemExit(str(e)) from None


# -----------------------------------------------------------------------------
# 2. Devices and processes

def setup_processes(cfg):
    """Start the process group under torchrun; returns (rank, world_size, device). Resolves cfg.device."""
    if cfg.device is None:
        cfg.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if cfg.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit("device='cuda' but torch sees no GPU; use --device=cpu")
    launched = 'RANK' in os.environ  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for every process
    if cfg.fsdp and not launched:
        raise SystemExit("fsdp=True shards the model over processes: launch with torchrun "
                         "(e.g. torchrun --standalone --nproc_per_node=8 train.py ...), or use --fsdp=False")
    if not launched:
        return 0, 1, torch.device(cfg.device)
    cuda = cfg.device == 'cuda'
    # LOCAL_RANK picks this process's GPU on its node; RANK counts processes across all nodes
    device = torch.device('cuda', int(os.environ['LOCAL_RANK'])) if cuda else torch.device('cpu')
    if cuda:
        torch.cuda.set_device(device)  # before NCCL starts, so that each process talks from its own GPU
    dist.init_process_group('nccl' if cuda else 'gloo', device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


def resolve_precision(cfg, device):
    """Fill in cfg.dtype and cfg.compile for this device."""
    bf16_ok = device.type == 'cpu' or torch.cuda.is_bf16_supported()
    if cfg.dtype is None:
        cfg.dtype = 'bfloat16' if device.type == 'cuda' and bf16_ok else 'float32'
    if cfg.dtype == 'bfloat16' and not bf16_ok:
        raise SystemExit("this GPU has no bfloat16; use --dtype=float32")
    if cfg.compile is None:
        cfg.compile = device.type == 'cuda'
    if device.type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 for whatever matmuls stay in float32


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


# -----------------------------------------------------------------------------
# 3. Data


def prepare_data(cfg, rank):
    """The dataset's meta.json as a dict, preparing the offline stdlib corpus first if it is missing.
    Resolves cfg.data_dir and cfg.vocab_size."""
    if cfg.data_dir is None:
        cfg.data_dir = os.path.join(HERE, 'data', cfg.dataset)
        if cfg.dataset == 'stdlib' and not os.path.exists(os.path.join(cfg.data_dir, 'meta.json')):
            # the only corpus that needs no download, so the quick start can make it without being asked
            if rank == 0:
                print("preparing the stdlib corpus (once, a few seconds): python data/stdlib/prepare.py")
                from data.stdlib import prepare
                prepare.main([])
            if dist.is_initialized():
                dist.barrier()
    try:
        meta = read_meta(cfg.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    data_vocab = meta['vocab_size']
    if cfg.vocab_size is None:
        cfg.vocab_size = -(-data_vocab // 64) * 64  # a multiple of 64 makes faster matmuls
    elif cfg.vocab_size < data_vocab:
        raise SystemExit(f"vocab_size={cfg.vocab_size} is smaller than the data's {data_vocab} "
                         f"({cfg.data_dir}/meta.json); use --vocab_size={data_vocab} or more, or None for automatic")
    return meta


def make_loaders(cfg, rank, world_size):
    """(train, val) loaders; each process reads its own rows of every step's span of tokens."""
    loaders = []
    for split in ('train', 'val'):
        pattern = os.path.join(glob.escape(cfg.data_dir), f'*_{split}_*.bin')
        try:
            loaders.append(ShardLoader(pattern, cfg.micro_batch_size, cfg.block_size, rank, world_size,
                                       cfg.vocab_size))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e)) from None
    return loaders


# -----------------------------------------------------------------------------
# 4. Model


def build_model(cfg, device, world_size):
    """(raw model, the model to call): raw holds the weights to save; the other is raw, or DDP around it."""
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    with torch.device(device):  # built where it runs: the big models take seconds, not minutes, on a GPU
        model = GPT(model_config(vars(cfg)))
    if cfg.compile:
        # block by block and in place: the layers share one compiled graph (a fraction of a whole-model
        # compile's time), FSDP2's hooks run between the compiled blocks, and the weights' names stay plain
        for block in model.blocks:
            block.compile()
    if cfg.fsdp:
        shard_model(model, cfg, world_size)
    elif world_size > 1:
        return model, DDP(model, device_ids=[device.index] if device.type == 'cuda' else None)
    return model, model


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


def autocast(cfg, device):
    """The forward pass's precision: FSDP casts through its policy, the rest runs under bf16 autocast."""
    if cfg.dtype == 'bfloat16' and not cfg.fsdp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# -----------------------------------------------------------------------------
# 5. Optimizer and schedule


def make_optimizer(raw, cfg, device):
    return torch.optim.AdamW(raw.optim_groups(cfg.weight_decay), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == 'cuda')  # one kernel for all parameters


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
# 6. Checkpoints and logs (the format and the readers are in common.py)


def save_checkpoint(cfg, raw, optimizer, progress, interval, train_loader, meta, rank):
    path = checkpoint_path(cfg.out_dir, cfg.fsdp)
    extra = {**progress, 'interval': interval, 'loader': train_loader.state_dict(), 'rng': rng_state(), 'config': vars(cfg), 'meta': meta}
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
    dist.barrier()
    dcp.save({'model': model_state, 'optimizer': optim_state}, checkpoint_id=tmp)  # returns once all shards are written
    if rank == 0:
        torch.save(extra, os.path.join(tmp, 'extra.pt'))
        # a directory cannot be replaced in one rename: between the two, the old one survives as ckpt.old
        if os.path.exists(path):
            os.replace(path, path + '.old')
        os.replace(tmp, path)
        shutil.rmtree(path + '.old', ignore_errors=True)
    dist.barrier()


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
        other = checkpoint_path(cfg.out_dir, not cfg.fsdp)
        hint = (f"{other} is there, saved with fsdp={not cfg.fsdp}: resume with --fsdp={not cfg.fsdp}"
                if os.path.exists(other) else "train from scratch with --init_from=scratch")
        raise SystemExit(f"init_from='resume' but there is no checkpoint at {path}; {hint}")
    ckpt = read_checkpoint(path)
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
    diffs = [f"{f.name}={saved[f.name]!r} (now {current[f.name]!r})" for f in fields(GPTConfig)
             if f.name not in RUNTIME_KEYS and saved[f.name] != current[f.name]]
    if diffs:
        raise SystemExit(f"{path} holds a different model: it has {', '.join(diffs)}; "
                         "resume with the config and flags that started it")


def trim_log(path, step):
    """Keep the log's records up to `step`: a run that died after its last checkpoint logged steps that
    the resumed run logs again."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.endswith('\n') and json.loads(line)['step'] <= step]  # not a cut line
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


# -----------------------------------------------------------------------------
# 7. The training loop


@torch.no_grad()
def evaluate(model, loader, cfg, device, grad_accum, world_size):
    """Mean LM loss on the first eval_steps * tokens_per_step validation tokens: the same tokens every time,
    whatever the number of processes and the micro-batch size, so that runs compare."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    batches = cfg.eval_steps * grad_accum  # per process
    for _ in range(batches):
        x, y = (t.to(device) for t in loader.next_batch())
        with autocast(cfg, device):
            _, losses = model(x, y)
        total += losses['lm']  # the language-modelling loss alone, comparable between dense and MoE models
    if world_size > 1:
        dist.all_reduce(total)
    model.train()
    return total.item() / (batches * world_size)


def forward_backward(model, loader, cfg, device, grad_accum):
    """The gradients of one step, from grad_accum micro-steps; returns this process's losses, averaged over its
    micro-steps, as a tensor [loss, lm, lb, z] left on the device (reading it would wait for the device)."""
    ddp = isinstance(model, DDP)
    losses_sum = torch.zeros(4, device=device)
    for micro in range(grad_accum):
        x, y = (t.to(device, non_blocking=True) for t in loader.next_batch())
        # DDP averages gradients over processes in backward; only the last micro-step needs it. FSDP
        # reduces every micro-step instead: keeping whole gradients would cost the memory it saves.
        sync = not ddp or micro == grad_accum - 1
        with nullcontext() if sync else model.no_sync():
            with autocast(cfg, device):
                _, losses = model(x, y)
            (losses['loss'] / grad_accum).backward()
        losses_sum += torch.stack([losses['loss'], losses['lm'], losses['lb'], losses['z']]).detach()
    return losses_sum / grad_accum


def step_stats(losses, norm, stop, world_size):
    """The step's numbers on the host, in one device-to-host copy (the step's only wait for the device):
    {'loss', 'lm', 'lb', 'z'} averaged over processes, 'grad_norm' and 'stop' (whether any process was asked
    to stop). One all-reduce carries the losses and the stop vote."""
    shared = torch.cat([losses, torch.tensor([float(stop.is_set())], device=losses.device)])
    if world_size > 1:
        dist.all_reduce(shared)
        shared[:4] /= world_size
    loss, lm, lb, z, stop_votes, grad_norm = torch.cat([shared, norm.view(1).to(shared)]).tolist()
    return {'loss': loss, 'lm': lm, 'lb': lb, 'z': z, 'grad_norm': grad_norm}, stop_votes > 0


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
    cfg = SimpleNamespace(**get_config(sys.argv[1:] if argv is None else argv))
    rank, world_size, device = setup_processes(cfg)
    stop, previous_handlers = catch_stop_signals()
    try:
        train(cfg, rank, world_size, device, stop)
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        if dist.is_initialized():
            # DDP's reducer lives in reference cycles: free it while its process group still exists, or
            # freeing it as the interpreter shuts down can abort the process (seen with gloo)
            gc.collect()
            dist.destroy_process_group()


def train(cfg, rank, world_size, device, stop):
    """Data, model and optimizer, then steps until max_steps (or stop_step, or a signal), with logs,
    evaluations and checkpoints along the way."""
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    resolve_precision(cfg, device)
    meta = prepare_data(cfg, rank)
    grad_accum = gradient_accumulation(cfg, world_size)
    train_loader, val_loader = make_loaders(cfg, rank, world_size)
    say("config:\n" + '\n'.join(f"  {key} = {value!r}" for key, value in vars(cfg).items()))
    say(summary(model_config(vars(cfg))))
    say(f"{world_size} process(es) on {device.type}, {grad_accum} micro-step(s) of {cfg.micro_batch_size} x "
        f"{cfg.block_size} tokens per process: {cfg.tokens_per_step:,} tokens per step")

    raw, model = build_model(cfg, device, world_size)
    optimizer = make_optimizer(raw, cfg, device)
    # steps done, tokens trained on, and seconds spent in training steps (not evaluating, saving, or the first
    # step after each start, which compiles and warms up); all three go on across resumes
    progress = {'step': 0, 'tokens': 0, 'train_time_s': 0.0}
    interval = new_interval()
    log_path = os.path.join(cfg.out_dir, 'log.jsonl')
    if rank == 0:
        os.makedirs(cfg.out_dir, exist_ok=True)
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
    say(f"training steps {progress['step'] + 1}..{end_step}; Ctrl-C saves a checkpoint and stops\n"
        "(loss and grad: means over the steps since the previous line; tok/s, MFU and ms: the same steps, less the "
        f"first after each start, which is timed alone: it includes {'compilation and ' if cfg.compile else ''}warm-up)")
    params = list(raw.parameters())
    warm_up = True  # the first step of this process
    timed_s, timed_steps = 0.0, 0  # steady steps since the last line
    while progress['step'] < end_step:
        started = time.perf_counter()
        lr = lr_at(progress['step'], cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr
        losses = forward_backward(model, train_loader, cfg, device, grad_accum)
        norm = clip_gradients(params, cfg)
        stats, stopping = step_stats(losses, norm, stop, world_size)
        # checked before the update, so that the weights and the last checkpoint stay good; the parts
        # before their sum, to name the culprit
        for name in ('lm', 'lb', 'z', 'loss', 'grad_norm'):
            if not math.isfinite(stats[name]):
                raise SystemExit(
                    f"step {progress['step'] + 1}: {name} is {stats[name]}; stopped before updating the weights. The "
                    f"last checkpoint in {cfg.out_dir} is untouched: lower learning_rate or raise warmup_steps, then "
                    "resume with --init_from=resume")
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
            dt = timed_s / timed_steps if timed_steps else seconds
            tok_per_s = cfg.tokens_per_step / dt if timed_steps else None
            mfu = flops_per_token * tok_per_s / (peak * world_size) if peak and tok_per_s else None
            aux = f" (lm {means['lm']:.4f} lb {means['lb']:.4f} z {means['z']:.4f})" if cfg.n_experts else ''
            speed = (f"{tok_per_s:,.0f} tok/s | MFU {f'{100 * mfu:.1f}%' if mfu else 'n/a'} | {1000 * dt:.0f} ms | "
                     f"ETA {format_duration(dt * (end_step - step))}" if timed_steps else
                     f"{1000 * dt:.0f} ms (first step: includes {'compilation and ' if cfg.compile else ''}warm-up)")
            say(f"step {step}/{cfg.max_steps} | loss {means['loss']:.4f}{aux} | lr {lr:.2e} | "
                f"grad {means['grad_norm']:.3f} | {speed}")
            if rank == 0 and (step == 1 or boundary or step == end_step):
                append_log(log_path, {'step': step, 'tokens': progress['tokens'], **means, 'lr': lr,
                                      'tok_per_s': tok_per_s, 'mfu': mfu, 'dt_ms': 1000 * dt,
                                      'train_time_s': progress['train_time_s']})
            timed_s, timed_steps = 0.0, 0
        if boundary:
            interval = new_interval()
        warm_up = False

        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val_loss = evaluate(model, val_loader, cfg, device, grad_accum, world_size)
            say(f"step {step}: val loss {val_loss:.4f}")
            if rank == 0:
                append_log(log_path, {'step': step, 'tokens': progress['tokens'], 'val_loss': val_loss})
        if stopping or step % cfg.ckpt_interval == 0 or step == end_step:
            save_checkpoint(cfg, raw, optimizer, progress, interval, train_loader, meta, rank)
            say(f"saved {checkpoint_path(cfg.out_dir, cfg.fsdp)} at step {step}")
        if stopping:
            say(f"stopped by a signal at step {step}; continue with the same command and --init_from=resume")
            return
    say(f"done; sample from it with: python sample.py --out_dir={cfg.out_dir}")


if __name__ == '__main__':
    main()
