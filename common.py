"""
What the scripts share, so that no script imports another: the hardware's facts, checkpoints, and figures.

    model_config(config)          the GPTConfig inside a run's config dict
    peak_flops(device_name)       a GPU's dense bf16 FLOP/s, for MFU
    cpu_name()                    the CPU's model name, for reports
    join_processes(kind)          (rank, world_size, device), joining torchrun's process group when launched by it
    checkpoint_path(out_dir, fsdp), atomic_save(obj, path), read_checkpoint(path)
    find_checkpoint(out_dir, fsdp), finish_interrupted_save(out_dir)
    load_checkpoint(out_dir)      a trained model, ready to sample, evaluate or analyze
    pyplot(), save_figure(fig, path, dpi)   optional matplotlib, and PNGs written whole
"""

import glob
import io
import os
import platform
import shutil
import warnings
import zipfile
from dataclasses import fields

import torch
import torch.distributed as dist

from data.shards import atomic_file, atomic_write
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# Configs and hardware


def model_config(config):
    """The GPTConfig inside a config dict (a run's settings, or a checkpoint's)."""
    return GPTConfig(**{f.name: config[f.name] for f in fields(GPTConfig) if f.name in config})


# Dense BF16 tensor-core peak per GPU, from the vendors' datasheets; the first name found in the device's wins.
PEAK_FLOPS = [('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H200 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
              ('A100', 312e12)]


def peak_flops(device_name):
    """The dense BF16 peak FLOP/s of a GPU, from its name; None when unknown (then MFU shows as n/a)."""
    for name, flops in PEAK_FLOPS:
        if name in device_name:
            return flops
    return None


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def join_processes(kind):
    """(rank, world_size, device) for device kind 'cuda' or 'cpu'. Launched by torchrun (which sets RANK,
    LOCAL_RANK and WORLD_SIZE for every process), this process joins the process group: nccl from its own GPU,
    or gloo on the CPU; otherwise it is the only process."""
    if 'RANK' not in os.environ:
        return 0, 1, torch.device(kind)
    cuda = kind == 'cuda'
    # LOCAL_RANK picks this process's GPU on its node; RANK counts processes across all nodes
    device = torch.device('cuda', int(os.environ['LOCAL_RANK'])) if cuda else torch.device('cpu')
    if cuda:
        torch.cuda.set_device(device)  # before NCCL starts, so that each process talks from its own GPU
    dist.init_process_group('nccl' if cuda else 'gloo', device_id=device if cuda else None)
    return dist.get_rank(), dist.get_world_size(), device


# -----------------------------------------------------------------------------
# Checkpoints
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
    temp file that the next save replaces (and finish_interrupted_save removes)."""
    with atomic_file(path) as f:
        torch.save(obj, f)
    fsync_dir(os.path.dirname(os.path.abspath(path)))  # the rename itself survives a crash


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
    model = GPT(model_config(ckpt['config']))
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
# Figures


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
