"""
What the scripts share, so that no script imports another: the hardware's facts, and checkpoints.

    model_config(config)          the GPTConfig inside a run's config dict
    peak_flops(device_name)       a GPU's dense bf16 FLOP/s, for MFU
    cpu_name()                    the CPU's model name, for reports
    checkpoint_path(out_dir, fsdp), atomic_save(obj, path), read_checkpoint(path)
    load_checkpoint(out_dir)      a trained model, ready to sample, evaluate or analyze
"""

import os
import platform
import warnings
from dataclasses import fields

import torch

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


# -----------------------------------------------------------------------------
# Checkpoints
#
# Without fsdp, rank 0 writes out_dir/ckpt.pt. With fsdp, every rank writes its shards into out_dir/ckpt/
# through torch.distributed.checkpoint, which can load them back on any number of ranks. Either way the
# checkpoint holds the weights, the optimizer, the step, the loader's position, the RNG states, the config
# and the dataset's meta (so that sample.py can decode without the data folder).


def checkpoint_path(out_dir, fsdp):
    return os.path.join(out_dir, 'ckpt' if fsdp else 'ckpt.pt')


def atomic_save(obj, path):
    """torch.save to a temp file beside path, then rename: a crash mid-save leaves the old checkpoint whole."""
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_checkpoint(path):
    """A checkpoint's contents; of a sharded one (a directory), all but the weights and optimizer."""
    if os.path.isdir(path):
        return torch.load(os.path.join(path, 'extra.pt'), weights_only=True)
    # mmap: the processes of a node resuming together share one copy of the file in memory
    return torch.load(path, map_location='cpu', weights_only=True, mmap=True)


def load_checkpoint(out_dir, device='cpu'):
    """{'model': the GPT in eval mode on device, 'config': its run's config dict, 'meta': its dataset's
    meta.json, 'step': the steps it trained} from out_dir's checkpoint, either kind."""
    paths = [p for p in (checkpoint_path(out_dir, False), checkpoint_path(out_dir, True)) if os.path.exists(p)]
    if not paths:
        raise FileNotFoundError(f"no checkpoint in {out_dir!r} (neither ckpt.pt nor ckpt/); train one with "
                                f"python train.py --out_dir={out_dir}")
    path = max(paths, key=os.path.getmtime)  # both kinds there: the newer one
    ckpt = read_checkpoint(path)
    model = GPT(model_config(ckpt['config']))
    if os.path.isdir(path):  # a sharded checkpoint: torch.distributed.checkpoint fills the whole tensors
        from torch.distributed import checkpoint as dcp
        state = {'model': model.state_dict()}
        with warnings.catch_warnings():  # it warns that it reads in one process, which is the point here
            warnings.filterwarnings('ignore', message='torch.distributed is disabled')
            dcp.load(state, checkpoint_id=path, no_dist=True)
        weights = state['model']
    else:
        weights = ckpt['model']
    model.load_state_dict(weights)
    return {'model': model.to(device).eval(), 'config': ckpt['config'], 'meta': ckpt['meta'], 'step': ckpt['step']}
