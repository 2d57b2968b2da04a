"""
Train a GPT with PolyCom activations: on a laptop CPU, one GPU, many GPUs or nodes (DDP), or sharded (FSDP2).

    python train.py                                        # the quick start (config/quickstart.py): a few CPU minutes
    python train.py config/dense_110m.py --activation=swiglu --max_steps=2000
    torchrun --standalone --nproc_per_node=8 train.py config/dense_1b_polynorm.py
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        train.py config/moe_1b7b_polynorm.py
    python train.py <the same arguments> --init_from=resume   # continue from out_dir's checkpoint
    torchrun --standalone --nproc_per_node=8 --max_restarts=3 train.py <config> --init_from=auto  # restarts resume
    python train.py config/dense_1b_polynorm.py --print_config  # every setting of the run, and where it came from

Settings (settings.py): GPTConfig's defaults (model.py) and the training keys' (settings.TRAINING), then config
files (plain Python assignments), then --key=value flags. `--help` lists every key with its meaning. The
training keys, by group: dataset, data_dir, out_dir, init_from, overwrite | tokens_per_step, micro_batch_size |
learning_rate, min_lr, warmup_steps, max_steps, stop_step, weight_decay, beta1, beta2, grad_clip | device, dtype,
compile, fsdp, dist_timeout_s, threads, seed, peak_flops | eval_interval, eval_steps, eval_split, log_interval,
ckpt_interval | task_interval, task, task_limit | wandb_log, wandb_project, wandb_run_name. Exit status: 0 done
(or stopped by a signal, with a checkpoint), 3 the loss or the weights turned non-finite
(settings.EXIT_DIVERGED), else 1.

The story: 1. processes and devices, 2. data, 3. model, 4. optimizer and schedule, 5. the training loop.
"""

import glob
import math
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import settings
from settings import EXIT_DIVERGED

if __name__ == '__main__':  # --help and --print_config answer before torch loads (a few seconds)
    CONFIG = settings.from_command_line(sys.argv[1:], 'train.py', __doc__.split('\n\n')[1])

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import checkpoint  # noqa: E402
from common import (Diverged, catch_stop_signals, check_memory, cpu_threads, device_kind,  # noqa: E402
                    join_processes, model_config, one_line_errors, peak_flops, torch_threads)
from data.shards import ShardLoader, read_meta  # noqa: E402
from data.tasks import evaluate_task, load_task  # noqa: E402
from model import GPT, summary  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# -----------------------------------------------------------------------------
# 1. Processes and devices


def start_processes(config):
    """(rank, world_size, device) of this process; under torchrun it joins the process group first."""
    kind = device_kind(config['device'])
    if kind == 'cuda' and not torch.cuda.is_available():
        raise SystemExit("device='cuda' but torch sees no GPU; use --device=cpu")
    if kind == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 for whatever matmuls stay in float32
    if config['fsdp'] and 'RANK' not in os.environ:  # torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
        raise SystemExit("fsdp=True shards the model over processes: launch with torchrun "
                         "(e.g. torchrun --standalone --nproc_per_node=8 train.py ...), or use --fsdp=False")
    return join_processes(kind, config['dist_timeout_s'])


def decide(config, device, rank):
    """(cfg, meta): every automatic choice (a None in the settings) made here, once, where it can be read;
    meta is the dataset's meta.json."""
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
    padded = settings.padded_vocab(meta['vocab_size'])
    cfg.vocab_size = config['vocab_size'] or padded
    if cfg.vocab_size < meta['vocab_size']:
        raise SystemExit(f"vocab_size={cfg.vocab_size} is smaller than the data's {meta['vocab_size']} "
                         f"({cfg.data_dir}/meta.json); use --vocab_size={padded}, or None for automatic")
    try:
        model_config(vars(cfg))  # GPTConfig checks the model's own keys (activation, heads, experts...)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return cfg, meta


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
# 2. Data


def prepare_data(data_dir, dataset, rank):
    """The dataset's meta.json as a dict, preparing the offline stdlib corpus first if it is missing."""
    if dataset == 'stdlib' and data_dir == os.path.join(HERE, 'data', 'stdlib') \
            and not os.path.exists(os.path.join(data_dir, 'meta.json')):
        # the only corpus that needs no download, so the quick start can make it without being asked
        if rank == 0:
            print("preparing the stdlib corpus (once, a few seconds): python data/stdlib/prepare.py", flush=True)
            from data.stdlib import prepare
            prepare.main([])
        checkpoint.barrier()
    try:
        return read_meta(data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None


def make_loaders(cfg, meta, rank, world_size):
    """(train, held-out) loaders; each process reads its own rows of every step's windows. Each shard is checked
    once against the data's own vocabulary (meta.json), as it opens. The held-out loader (cfg.eval_split) reads
    the same windows at every evaluation, spread evenly over the whole split."""
    pattern = os.path.join(glob.escape(cfg.data_dir), f'*_{cfg.eval_split}_*.bin')
    if cfg.eval_split == 'test' and not glob.glob(pattern):
        raise SystemExit(f"eval_split='test': no test shards in {cfg.data_dir} (prepared before its prepare.py wrote "
                         f"a test split?); run data/{cfg.dataset}/prepare.py again (the train shards stay the same)")
    batches = cfg.eval_steps * gradient_accumulation(cfg, world_size)  # what each evaluation reads
    try:  # the seed shuffles the training windows anew each epoch
        return (ShardLoader(os.path.join(glob.escape(cfg.data_dir), '*_train_*.bin'), cfg.micro_batch_size,
                            cfg.block_size, rank, world_size, meta['vocab_size'], seed=cfg.seed),
                ShardLoader(pattern, cfg.micro_batch_size, cfg.block_size, rank, world_size, meta['vocab_size'],
                            spread=batches))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None


# -----------------------------------------------------------------------------
# 3. Model: built on the meta device first (shapes only), then where it runs; DDP or FSDP around it


def build_model(cfg, device, world_size):
    """(raw model, the model to call): raw holds the weights to save; the other is raw, or DDP around it."""
    with torch.device('meta'):  # shapes only, no memory yet
        model = GPT(model_config(vars(cfg)))
    check_memory(model, cfg, device, world_size)
    if not cfg.fsdp:
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        with torch.device(device):  # built where it runs: the big models take seconds, not minutes, on a GPU
            model = GPT(model_config(vars(cfg)))
    if cfg.compile:
        # block by block and in place: the layers share one compiled graph (a fraction of a whole-model
        # compile's time), FSDP2's hooks run between the compiled blocks, and the weights' names stay plain
        for block in model.blocks:
            block.compile()
    if cfg.fsdp:
        shard_model(model, cfg, world_size)  # still on the meta device: no process ever holds the whole model
        model.to_empty(device=device)  # each process allocates its own shards
        torch.manual_seed(cfg.seed)
        # the weights one process would start from: each matrix drawn whole on this device, one at a time, and
        # cut to this process's shard (model.normal_), so that any number of processes starts alike
        model.init_weights()
        return model, model
    if dist.is_initialized():  # under torchrun, even as its only process: one code path at any scale
        # no find_unused_parameters, even for an MoE whose loop path skips the experts that get no tokens: each
        # layer's experts are slices of one stacked parameter, which gets a gradient (zero rows) all the same
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


def autocast(cfg):
    """The forward pass's precision: FSDP casts through its policy, the rest runs under bf16 autocast."""
    if cfg.dtype == 'bfloat16' and not cfg.fsdp:
        return torch.autocast(cfg.device, dtype=torch.bfloat16)
    return nullcontext()


# -----------------------------------------------------------------------------
# 4. Optimizer and schedule


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
# 5. The training loop


@torch.no_grad()
def evaluate(model, loader, cfg, batches, world_size):
    """Mean LM loss on `batches` held-out batches of every process (the loader's windows, spread evenly over its
    split): the same tokens every time, whatever the number of processes and the micro-batch size, so that runs
    compare."""
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
            raise Diverged(f"step {step}: {name} is {stats[name]}; stopped before updating the weights. The last "
                           f"checkpoint in {cfg.out_dir} is untouched: lower learning_rate or raise warmup_steps, "
                           "then resume with --init_from=resume")


def check_finite_weights(raw, step, cfg):
    """Never save weights that an update made non-finite (e.g. a learning rate so large that the update
    overflowed while the loss was still finite)."""
    finite = torch.stack([torch.isfinite(p.to_local() if hasattr(p, 'to_local') else p).all()
                          for p in raw.parameters()]).all().float()  # FSDP: this rank's shards
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite.item():
        raise Diverged(f"step {step}: the update made some weights inf or NaN; not saved. The last checkpoint in "
                       f"{cfg.out_dir} is untouched: lower learning_rate, then resume with --init_from=resume")


# what each log line averages over its interval (the steps since the last multiple of log_interval)
MEANS = ('loss', 'lm', 'lb', 'z', 'grad_norm')


def new_interval():
    """The running sums of MEANS since the last log boundary: saved in checkpoints, so that a resumed run logs
    the same means as an uninterrupted one."""
    return {'steps': 0, 'sums': [0.0] * len(MEANS)}


def log_line(step, end_step, cfg, means, lr, dt, tok_per_s, mfu):
    aux = f" (lm {means['lm']:.4f} lb {means['lb']:.4f} z {means['z']:.4f})" if cfg.n_experts else ''
    left = int(dt * (end_step - step))
    eta = f"{left // 3600}h{left % 3600 // 60:02d}m" if left >= 3600 else f"{left // 60}m{left % 60:02d}s"
    speed = (f"{tok_per_s:,.0f} tok/s | MFU {f'{100 * mfu:.1f}%' if mfu else 'n/a'} | {1000 * dt:.0f} ms | "
             f"ETA {eta}" if tok_per_s else f"{1000 * dt:.0f} ms (first step: includes compilation/warm-up)")
    return (f"step {step}/{cfg.max_steps} | loss {means['loss']:.4f}{aux} | lr {lr:.2e} | "
            f"grad {means['grad_norm']:.3f} | {speed}")


def main(argv=None):
    """Train with the settings of argv (config files and flags; sys.argv when None)."""
    config, _ = CONFIG if argv is None else settings.resolve(argv)
    with catch_stop_signals() as stop, one_line_errors(config['dist_timeout_s']):
        rank, world_size, device = start_processes(config)
        cfg, meta = decide(config, device, rank)
        with torch_threads(cfg.threads), checkpoint.lock_out_dir(cfg.out_dir, rank):  # one run per out_dir
            train(cfg, meta, rank, world_size, device, stop)


def train(cfg, meta, rank, world_size, device, stop):
    """Data, model and optimizer, then steps until max_steps (or stop_step, or a signal), with logs,
    evaluations and checkpoints along the way."""
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    grad_accum = gradient_accumulation(cfg, world_size)
    init_from = checkpoint.prepare_out_dir(cfg.out_dir, cfg.init_from, cfg.overwrite, rank)  # 'auto' decided
    train_loader, val_loader = make_loaders(cfg, meta, rank, world_size)
    say("config:\n" + '\n'.join(f"  {key} = {value!r}" for key, value in vars(cfg).items()))
    say(summary(model_config(vars(cfg))))
    say(f"{world_size} process(es) on {device.type}, {cfg.threads} CPU thread(s) each; {grad_accum} micro-step(s) "
        f"of {cfg.micro_batch_size} x {cfg.block_size} tokens per process: {cfg.tokens_per_step:,} tokens per step")
    raw, model = build_model(cfg, device, world_size)
    optimizer = make_optimizer(raw, cfg)

    # steps done, tokens trained on, and seconds spent in training steps (not evaluating, saving, or the first
    # step after each start, which compiles and warms up); all three go on across resumes
    progress = {'step': 0, 'tokens': 0, 'train_time_s': 0.0}
    interval, saved = new_interval(), {}
    if init_from == 'resume':
        saved = checkpoint.resume(cfg.out_dir, cfg.fsdp, raw, optimizer, vars(cfg))
        train_loader.load_state_dict(saved['loader'])
        progress = {key: saved[key] for key in progress}
        interval = saved['interval']
        say(f"resumed from {checkpoint.checkpoint_path(cfg.out_dir, cfg.fsdp)} at step {progress['step']}")
        if rank == 0:
            checkpoint.trim_log(cfg.out_dir, progress['step'])
    elif rank == 0 and os.path.exists(checkpoint.log_path(cfg.out_dir)):
        os.remove(checkpoint.log_path(cfg.out_dir))  # a new run, a new log

    # what log.jsonl gets goes to Weights & Biases too (wandb_log), into the same W&B run across resumes
    wandb_run = checkpoint.start_wandb(cfg, saved.get('wandb_id')) if cfg.wandb_log and rank == 0 else None

    def log(record):
        if rank == 0:
            record = {'step': progress['step'], 'tokens': progress['tokens'], **record}
            checkpoint.append_log(cfg.out_dir, record)
            if wandb_run:
                wandb_run.log(record, step=progress['step'])

    flops_per_token = raw.flops_per_token(cfg.block_size)
    peak = cfg.peak_flops or (peak_flops(torch.cuda.get_device_name(device)) if device.type == 'cuda' else None)
    end_step = min(cfg.max_steps, cfg.stop_step or cfg.max_steps)
    if progress['step'] >= end_step:
        say(f"nothing to do: the run is at step {progress['step']}, max_steps={cfg.max_steps}; raise max_steps "
            "to train on")
        return
    task = None
    if cfg.task_interval > 0:  # the multiple-choice task scored as training goes, read and tokenized once
        try:
            task = load_task(cfg.task, meta, cfg.block_size, limit=cfg.task_limit or None)
        except (OSError, ValueError, RuntimeError) as e:
            raise SystemExit(f"task={cfg.task!r}: {e}") from None
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
            if step == 1 or boundary or step == end_step:  # a resumed run's first step: printed, not logged
                log({**means, 'lr': lr, 'tok_per_s': tok_per_s, 'mfu': mfu, 'dt_ms': 1000 * dt,
                     'train_time_s': progress['train_time_s']})
            timed_s, timed_steps = 0.0, 0
        if boundary:
            interval = new_interval()
        warm_up = False

        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val_loss = evaluate(model, val_loader, cfg, cfg.eval_steps * grad_accum, world_size)
            say(f"step {step}: {cfg.eval_split} loss {val_loss:.4f}")  # logged as val_loss, whichever split
            log({'val_loss': val_loss})
        if task and (step % cfg.task_interval == 0 or step == cfg.max_steps):
            with autocast(cfg):  # raw: without DDP's hooks (with FSDP, raw is the sharded model)
                result = evaluate_task(raw, task, cfg.micro_batch_size)  # micro_batch_size items per forward pass
            say(f"step {step}: {task['name']} acc {result['acc']:.4f} acc_norm {result['acc_norm']:.4f} "
                f"(n={result['n']})")
            log({'eval_task': task['name'], **{key: result[key] for key in ('acc', 'acc_norm', 'n')}})
        if stopping or step % cfg.ckpt_interval == 0 or step == end_step:
            check_finite_weights(raw, step, cfg)
            checkpoint.save(cfg.out_dir, cfg.fsdp, raw, optimizer, {
                **progress, 'interval': interval, 'loader': train_loader.state_dict(), 'config': vars(cfg),
                'meta': meta, 'wandb_id': wandb_run and wandb_run.id}, rank)
            say(f"saved {checkpoint.checkpoint_path(cfg.out_dir, cfg.fsdp)} at step {step}")
        if stopping:
            say(f"stopped by a signal at step {step}; continue with the same command and --init_from=resume")
            return
    say(f"done; sample from it with: python sample.py --out_dir={cfg.out_dir}")


if __name__ == '__main__':
    try:
        main()
    except Diverged as e:
        print(e.code, file=sys.stderr, flush=True)
        sys.exit(EXIT_DIVERGED)
