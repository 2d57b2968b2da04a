"""
A training run's files in its out_dir, in one home for every script: the checkpoint (its format, atomic saves,
resume) and the log, log.jsonl (one JSON record per line).

    lock_out_dir(out_dir, rank)                                 one run per out_dir (a context), however it ends
    prepare_out_dir(out_dir, init_from, overwrite, rank) -> 'scratch' or 'resume': finish a killed save, guard runs
    save(out_dir, fsdp, model, optimizer, state, rank)          the run, atomically (train.py)
    resume(out_dir, fsdp, model, optimizer, config) -> state    the run back, exactly where it was saved
    load_checkpoint(out_dir)    a trained model, ready to sample, evaluate or analyze
    read_log(out_dir), append_log(out_dir, record), trim_log(out_dir, step)
    start_wandb(cfg, run_id)    the W&B run that the log's records also go to (wandb_log=True)
"""

import errno
import fcntl
import glob
import json
import os
import random
import shutil
import socket
import warnings
import zipfile
from contextlib import contextmanager

import torch
import torch.distributed as dist

from data.shards import atomic_file, atomic_write
from model import GPT, RUNTIME_KEYS, GPTConfig
from settings import MODEL_KEYS, model_keys

# -----------------------------------------------------------------------------
# The checkpoint's files
#
# Without fsdp, rank 0 writes out_dir/ckpt.pt. With fsdp, every rank writes its shards into out_dir/ckpt/
# through torch.distributed.checkpoint, which can load them back on any number of ranks. Either way the
# checkpoint holds the weights, the optimizer, the step, the loader's position, the RNG states, the config
# and the dataset's meta (so that sample.py can decode without the data folder).
#
# Saves never leave a half-written checkpoint under its name: ckpt.pt is written as ckpt.pt.tmp, flushed to
# disk, then renamed. A sharded save writes ckpt.tmp/ (extra.pt last, so that its presence means complete),
# renames ckpt/ to ckpt.old/, ckpt.tmp/ to ckpt/, then deletes ckpt.old/: a kill between the two renames
# leaves a complete ckpt.tmp/ and no ckpt/, which find_checkpoint reads and finish_interrupted_save renames.

REQUIRED = ('model', 'config', 'meta', 'step')  # what a checkpoint of train.py holds, at least


def checkpoint_path(out_dir, fsdp):
    return os.path.join(out_dir, 'ckpt' if fsdp else 'ckpt.pt')


def fsync_dir(path):
    """Make a rename in the directory `path` durable (a crash right after it cannot undo it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj, path):
    """torch.save through path + '.tmp' (data.shards.atomic_file: on disk, then renamed onto path), streamed
    rather than held in memory: a crash mid-save leaves the old checkpoint whole, and a killed save leaves one
    temp file that the next save replaces (and finish_interrupted_save removes). A full disk stops the run in
    one line, the old checkpoint whole and the temp file removed."""
    try:
        with atomic_file(path) as f:
            torch.save(obj, f)
    except Exception as e:
        full = disk_full(e)
        if not full:
            raise
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
        raise SystemExit(f"could not save {path}: {full.strerror} (it needs about {mib(tensor_bytes(obj))}; its "
                         f"filesystem has {mib(free)} free, less any quota or ulimit -f); the previous checkpoint "
                         "is intact: make room, then run again with --init_from=auto") from None
    fsync_dir(os.path.dirname(os.path.abspath(path)))  # the rename itself survives a crash


def disk_full(error):
    """The OSError of a full disk, a quota or a file-size limit behind error, or None (torch.save reports a
    failed write as a RuntimeError of its own, raised while handling the OSError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return error
        error = error.__cause__ or error.__context__
    return None


def tensor_bytes(obj):
    """The bytes of the tensors in a nest of dicts, lists and tuples: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return sum(tensor_bytes(value) for value in values)


def mib(n):
    return f"{n / 2 ** 20:,.1f} MiB"


def is_complete_sharded(path):
    return os.path.isfile(os.path.join(path, 'extra.pt'))


def find_checkpoint(out_dir, fsdp):
    """The checkpoint of one kind to read in out_dir, or None: ckpt.pt, or ckpt/ (else, after a sharded save
    killed between its renames, the complete ckpt.tmp/ or the previous ckpt.old/)."""
    path = checkpoint_path(out_dir, fsdp)
    if not fsdp or os.path.isdir(path):
        return path if os.path.exists(path) else None
    for candidate in (path + '.tmp', path + '.old'):
        if is_complete_sharded(candidate):
            return candidate
    return None


def finish_interrupted_save(out_dir):
    """Complete or clear what a killed save left in out_dir (one process only, before the run reads or writes
    its checkpoint); returns a line for each thing done."""
    done = []
    single, sharded = checkpoint_path(out_dir, False), checkpoint_path(out_dir, True)
    tmp, old = sharded + '.tmp', sharded + '.old'
    if not os.path.isdir(sharded) and (is_complete_sharded(tmp) or is_complete_sharded(old)):
        source = tmp if is_complete_sharded(tmp) else old
        os.replace(source, sharded)  # the rename the save did not get to
        done.append(f"{source} was a complete checkpoint left by an interrupted save: renamed it to {sharded}")
    for path in (tmp, old):
        if os.path.isdir(path):
            shutil.rmtree(path)
            done.append(f"removed {path}, left by an interrupted save")
    # ckpt.pt.tmp, and the ckpt.pt.<pid>.tmp files that saves named before the temp name was fixed
    for path in glob.glob(glob.escape(single) + '.tmp') + glob.glob(glob.escape(single) + '.*.tmp'):
        os.remove(path)
        done.append(f"removed {path}, left by an interrupted save")
    return done


def read_checkpoint(path):
    """A checkpoint's contents; of a sharded one (a directory), all but the weights and optimizer. A file
    that is not a whole checkpoint (empty, cut short, other bytes) raises ValueError naming it."""
    file = os.path.join(path, 'extra.pt') if os.path.isdir(path) else path
    try:
        # mmap: the processes of a node resuming together share one copy of the file in memory
        ckpt = torch.load(file, map_location='cpu', weights_only=True, mmap=not os.path.isdir(path))
    except Exception as e:  # torch.load fails in many ways on bad bytes (zip, pickle, EOF, OS errors)
        reason = ('it is empty' if os.path.getsize(file) == 0 else
                  'not a torch.save archive: cut short, or other bytes' if not zipfile.is_zipfile(file) else
                  f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise ValueError(f"{file} is not a readable checkpoint ({reason}); restore it from a copy, or train "
                         "anew") from None
    # a sharded checkpoint's extra.pt holds all but the weights
    missing = [key for key in REQUIRED if not (key == 'model' and os.path.isdir(path))
               and not (isinstance(ckpt, dict) and key in ckpt)]
    if missing:
        raise ValueError(f"{file} is not a checkpoint of train.py: it has no {', '.join(missing)}")
    return ckpt


def load_checkpoint(out_dir, device='cpu'):
    """{'model': the GPT in eval mode on device, 'config': its run's config dict, 'meta': its dataset's
    meta.json, 'step': the steps it trained} from out_dir's checkpoint, either kind. Raises FileNotFoundError
    when there is none and ValueError when it is unreadable, each naming the path."""
    paths = [p for p in (find_checkpoint(out_dir, False), find_checkpoint(out_dir, True)) if p]
    if not paths:
        raise FileNotFoundError(f"no checkpoint in {out_dir!r} (neither ckpt.pt nor ckpt/); train one with "
                                f"python train.py --out_dir={out_dir}")
    path = max(paths, key=os.path.getmtime)  # both kinds there: the newer one
    ckpt = read_checkpoint(path)
    model = GPT(GPTConfig(**model_keys(ckpt['config'])))
    if os.path.isdir(path):  # a sharded checkpoint: torch.distributed.checkpoint fills the whole tensors
        from torch.distributed import checkpoint as dcp
        state = {'model': model.state_dict()}
        try:
            with warnings.catch_warnings():  # it warns that it reads in one process, which is the point here
                warnings.filterwarnings('ignore', message='torch.distributed is disabled')
                dcp.load(state, checkpoint_id=path, no_dist=True)
        except Exception as e:  # missing or cut shards
            raise ValueError(f"{path} is not a readable sharded checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        weights = state['model']
    else:
        weights = ckpt['model']
    model.load_state_dict(weights)
    return {'model': model.to(device).eval(), 'config': ckpt['config'], 'meta': ckpt['meta'], 'step': ckpt['step']}


# -----------------------------------------------------------------------------
# Saving and resuming a run: weights, optimizer, progress, the loader's position and the RNGs


def barrier():
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def lock_out_dir(out_dir, rank):
    """Hold out_dir for this run while the block runs: one run per out_dir. Rank 0 holds an flock on
    out_dir/run.lock, which the OS drops however the process ends, so that a crashed or killed run never blocks
    the next; the file names the holder. A second run into a held out_dir stops at once (every rank)."""
    refusal, lock = None, None
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        lock = open(os.path.join(out_dir, 'run.lock'), 'a+')  # 'a+': opened without emptying the holder's line
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
            lock.flush()
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "a process that is starting"
            lock.close()
            refusal = (f"{out_dir} is in use by another run ({holder}): wait for it to end, or train into "
                       "another --out_dir")
        except OSError as e:  # a file system without locks (e.g. Lustre mounted without -o flock)
            print(f"warning: could not lock {lock.name} ({e.strerror}): two runs into {out_dir} at once would "
                  "not be kept apart", flush=True)
    if dist.is_initialized():
        shared = [refusal]
        dist.broadcast_object_list(shared)  # rank 0's answer, so that every rank stops together
        refusal = shared[0]
    if refusal:
        raise SystemExit(refusal)
    try:
        yield
    finally:
        if lock:
            lock.close()


def prepare_out_dir(out_dir, init_from, overwrite, rank):
    """Make out_dir ready for a run: finish or clear what a killed save left (rank 0), and refuse a scratch
    run that would replace a checkpoint, unless told to (every rank: they all stop together). Returns 'scratch'
    or 'resume': init_from, with 'auto' decided (resume when out_dir holds a checkpoint)."""
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        for line in finish_interrupted_save(out_dir):
            print(line, flush=True)
        tmp_log = os.path.join(out_dir, 'log.jsonl.tmp')
        if os.path.exists(tmp_log):
            os.remove(tmp_log)
    barrier()
    found = [path for path in (find_checkpoint(out_dir, False), find_checkpoint(out_dir, True)) if path]
    if init_from == 'auto':
        return 'resume' if found else 'scratch'  # either kind: resume() names one saved with the other fsdp
    if init_from == 'scratch' and found and not overwrite:
        try:
            held = f"a run at step {read_checkpoint(found[0])['step']}"
        except ValueError:
            held = "an unreadable checkpoint"
        raise SystemExit(f"{found[0]} holds {held}: continue it with --init_from=resume, replace it with "
                         "--overwrite=True, or train into another --out_dir")
    return init_from


def save(out_dir, fsdp, model, optimizer, state, rank):
    """Save the run: the weights and optimizer, plus `state` (step, tokens, ..., the loader's position, config,
    meta), with the RNGs. Weights made non-finite by an update are never saved."""
    params = [p.to_local() if hasattr(p, 'to_local') else p for p in model.parameters()]  # FSDP: this rank's shards
    finite = torch.stack([torch.isfinite(p).all() for p in params]).all().float()
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite.item():  # e.g. a learning rate so large that the update overflowed; the loss is not NaN yet
        raise SystemExit(f"step {state['step']}: the update made some weights inf or NaN; not saved. The last "
                         f"checkpoint in {out_dir} is untouched: lower learning_rate, then resume with "
                         "--init_from=resume")
    path = checkpoint_path(out_dir, fsdp)
    extra = {**state, 'rng': rng_state()}
    if not fsdp:
        if rank == 0:
            atomic_save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), **extra}, path)
        return
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optim_state = get_state_dict(model, optimizer)
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
        fsync_dir(out_dir)
        shutil.rmtree(path + '.old', ignore_errors=True)
    barrier()


def resume(out_dir, fsdp, model, optimizer, config):
    """Restore the run saved in out_dir into model and optimizer (and the RNGs); returns the rest of what
    save() was given. Refuses a checkpoint of another model than config's."""
    path = checkpoint_path(out_dir, fsdp)
    if not os.path.exists(path):
        other = find_checkpoint(out_dir, not fsdp)
        hint = (f"{other} is there, saved with fsdp={not fsdp}: resume with --fsdp={not fsdp}"
                if other else "train from scratch with --init_from=scratch")
        raise SystemExit(f"init_from='resume' but there is no checkpoint at {path}; {hint}")
    try:
        ckpt = read_checkpoint(path)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    check_same_model(ckpt['config'], config, path)
    if fsdp:
        from torch.distributed import checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
        model_state, optim_state = get_state_dict(model, optimizer)  # this run's layout: dcp reshards into it
        state = {'model': model_state, 'optimizer': optim_state}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=state['model'], optim_state_dict=state['optimizer'])
    else:
        model.load_state_dict(ckpt['model'])
        optimizer.load_state_dict(ckpt['optimizer'])
        # the optimizer keeps the tensors it is given: its own copies instead, so that nothing of the run stays
        # in the checkpoint's memory map (read_checkpoint), where a file rewritten in place kills it (SIGBUS)
        for state in optimizer.state.values():
            state.update({key: value.clone() for key, value in state.items() if torch.is_tensor(value)})
    set_rng_state(ckpt['rng'])
    return {key: value for key, value in ckpt.items() if key not in ('model', 'optimizer', 'rng')}


def check_same_model(saved, current, path):
    diffs = [f"{key}={saved[key]!r} (now {current[key]!r})" for key in MODEL_KEYS
             if key not in RUNTIME_KEYS and key in saved and saved[key] != current[key]]
    if diffs:
        raise SystemExit(f"{path} holds a different model: it has {', '.join(diffs)}; "
                         "resume with the config and flags that started it")


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


# -----------------------------------------------------------------------------
# The log: out_dir/log.jsonl, one record per line; training records have 'loss', evaluations 'val_loss',
# downstream tasks 'eval_task'. Only rank 0 writes it.


def log_path(out_dir):
    return os.path.join(out_dir, 'log.jsonl')


def append_log(out_dir, record):
    with open(log_path(out_dir), 'a') as f:
        f.write(json.dumps(record) + '\n')


def log_records(out_dir):
    """[(line number, record or None, the line)] of the log; a last line cut short by a kill is left out, and
    a whole line that is not JSON comes as None."""
    path, records = log_path(out_dir), []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.endswith('\n') or not line.strip():
                continue  # the last line, cut short by a kill; the resumed run logs that step again
            try:
                records.append((n, json.loads(line), line))
            except json.JSONDecodeError:
                records.append((n, None, line))
    return records


def start_wandb(cfg, run_id=None):
    """The Weights & Biases run that a training run's log records also go to: run_id (kept in the checkpoint)
    continues the same W&B run after a resume. A missing wandb is one line, before any step is trained."""
    try:
        import wandb
    except ImportError:
        raise SystemExit("wandb_log=True needs the wandb package: pip install wandb (or --wandb_log=False)") from None
    name = cfg.wandb_run_name or os.path.basename(os.path.abspath(cfg.out_dir))
    return wandb.init(project=cfg.wandb_project, name=name, config=vars(cfg), id=run_id, resume='allow',
                      reinit='finish_previous')  # a second run in one process (tests) is a run of its own


def trim_log(out_dir, step):
    """Keep the log's records up to `step`: a run that died after its last checkpoint logged steps that the
    resumed run logs again. A whole line that is not a log record goes, with a warning."""
    if not os.path.exists(log_path(out_dir)):
        return
    kept = []
    for n, record, line in log_records(out_dir):
        if not isinstance(record, dict) or not isinstance(record.get('step'), int):
            print(f"warning: {log_path(out_dir)} line {n} is not a log record; dropped it: {line.strip()[:80]!r}",
                  flush=True)
        elif record['step'] <= step:
            kept.append(line)
    atomic_write(log_path(out_dir), ''.join(kept).encode())


def read_log(out_dir):
    """(train records, eval records, task records) of the run's log, each ordered by step; should a step
    appear twice (trim_log makes sure it does not), the later record wins. A line that is not a record
    raises ValueError naming it."""
    train, evals, tasks = {}, {}, {}
    for n, record, _ in log_records(out_dir):
        if not isinstance(record, dict) or 'step' not in record:
            raise ValueError(f"{log_path(out_dir)}, line {n}, is not a log record")
        if 'eval_task' in record:
            tasks[record['eval_task'], record['step']] = record
        else:
            (evals if 'val_loss' in record else train)[record['step']] = record
    return ([train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)],
            [tasks[k] for k in sorted(tasks, key=lambda k: (k[1], k[0]))])
