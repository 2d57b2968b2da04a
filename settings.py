"""
A run's settings, one way for every script: defaults, then config files in order, then --key=value flags,
later ones winning. No torch here, so that --help, --print_config and a mistyped key answer at once.

    config, sources = resolve(argv)   # argv: config files and --key=value flags; sources: where each key came from

The keys are the model's (GPTConfig's fields in model.py) and the training keys (TRAINING below); the comment
beside each key is its meaning in --help. A config file is plain Python assignments; it may build on another
with inherit('other.py') (a file in its own folder), whose values its own assignments then replace. With no
config file, a run is the quick start, config/quickstart.py.
"""

import ast
import difflib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
QUICKSTART = os.path.join('config', 'quickstart.py')
EXIT_DIVERGED = 3  # train.py's exit status when the loss or the weights turn non-finite (sweep.py reads it)
# under torchrun a bad command line fails every process at once and rank 0 alone says why; torchrun stops the rest
# as soon as one exits, so the others wait this long first, or a rank 0 that started a moment later is stopped
# before it says it
RANK0_FIRST_S = 10

# The training keys. Their defaults are the quick start's: 1000 steps of 2,048 tokens, a few minutes on two CPU
# cores, taking the byte-level loss from 5.6 to about 2. The comment on each line is its --help.
TRAINING = dict(
    # data and output
    dataset='stdlib',  # shards in data/<dataset>/, made by data/<dataset>/prepare.py (stdlib: made on demand)
    data_dir=None,  # None: data/<dataset> beside train.py
    out_dir='out',  # checkpoint (ckpt.pt, or ckpt/ with fsdp) and log.jsonl
    init_from='scratch',  # 'scratch', 'resume' (from out_dir's checkpoint), or 'auto' (resume if there is one)
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
    dist_timeout_s=600,  # seconds a process waits for the others (to join, in a collective), then stops with an error
    threads=None,  # CPU threads per process; None: $OMP_NUM_THREADS if set, else the cores other work leaves idle
    seed=1337,  # sets the initial weights and the order of the training windows: the same seed, the same run
    peak_flops=None,  # the device's dense bf16 FLOP/s for MFU; None: looked up from the GPU's name
    # how often, in steps
    eval_interval=200,  # validation loss every this many steps, and at max_steps
    eval_steps=20,  # each evaluation reads eval_steps * tokens_per_step held-out tokens, spread evenly over the split
    eval_split='val',  # the held-out split evaluated: 'val', or 'test' (a sweep picks lrs on val, reports test)
    log_interval=25,  # a log line every this many steps (and at step 1)
    ckpt_interval=200,  # a checkpoint every this many steps (and at the last)
    # downstream evaluation as training goes (data/tasks.py; eval.py scores a finished checkpoint the same way)
    task_interval=0,  # score `task` every this many steps and at max_steps, into log.jsonl; 0 = off
    task='hellaswag',  # 'hellaswag' (downloaded to data/hellaswag/ on first use) or a generic multiple-choice .jsonl
    task_limit=0,  # score only the first task_limit items; 0 = all
    # run tracking with Weights & Biases (optional: pip install wandb), as nanoGPT names its keys
    wandb_log=False,  # True: log what log.jsonl gets to W&B too (WANDB_MODE=offline keeps it on this machine)
    wandb_project='polycom',  # the W&B project
    wandb_run_name=None,  # None: out_dir's folder name
)

# keys whose default is None, or that take None as well: None or this type
OPTIONAL = {'vocab_size': int, 'data_dir': str, 'stop_step': int, 'device': str, 'dtype': str,
            'compile': bool, 'peak_flops': float, 'threads': int, 'wandb_run_name': str}
CHOICES = {'init_from': ('scratch', 'resume', 'auto'), 'device': (None, 'cpu', 'cuda'),
           'dtype': (None, 'float32', 'bfloat16'), 'eval_split': ('val', 'test')}
RANGES = [  # (keys, test, what the test asks); None passes (see OPTIONAL)
    (('block_size', 'n_layer', 'n_head', 'n_embd', 'threads', 'tokens_per_step', 'micro_batch_size', 'max_steps',
      'stop_step', 'eval_interval', 'eval_steps', 'log_interval', 'ckpt_interval', 'learning_rate', 'peak_flops',
      'dist_timeout_s'),
     lambda v: v > 0, "positive"),
    (('warmup_steps', 'min_lr', 'weight_decay', 'grad_clip', 'task_interval', 'task_limit'), lambda v: v >= 0,
     "zero or positive"),
    (('beta1', 'beta2'), lambda v: 0 <= v < 1, "in [0, 1)"),
]
FLOAT32_MAX = 3.4028234663852886e38

# -----------------------------------------------------------------------------
# The keys and their meanings, read from the source: GPTConfig's without importing torch, TRAINING's comments


def documented_keys(path, name):
    """{key: (default, comment)} for the assignments inside `name` in a Python file: a dataclass's fields (like
    GPTConfig) or the keywords of a dict(...) (like TRAINING). The comment is the one on the key's line (for a
    dataclass field without one, the last comment line above it in the class)."""
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
    keys, heading, start = {}, '', block.lineno
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
DEFAULTS = {**{key: default for key, (default, _) in MODEL_KEYS.items()}, **TRAINING}


def model_keys(config):
    """The model's keys of a config (GPTConfig(**model_keys(config)) builds it)."""
    return {key: config[key] for key in MODEL_KEYS if key in config}


def padded_vocab(n):
    """vocab_size=None's choice: the data's vocabulary rounded up to a multiple of 64, for faster matmuls."""
    return -(-n // 64) * 64


def data_vocab(config):
    """The vocab_size a run of config trains with, for scripts that build its model without its data (bench.py,
    sweep.py, model.py): its own, or the prepared data's (meta.json) as train.py pads it, or gpt2's 50304 when
    the data is not prepared yet."""
    if config['vocab_size'] is not None:
        return config['vocab_size']
    folder = config['data_dir'] or os.path.join(HERE, 'data', config['dataset'])
    try:
        with open(os.path.join(folder, 'meta.json')) as f:
            return padded_vocab(json.load(f)['vocab_size'])
    except (OSError, ValueError, KeyError, TypeError):
        return 50304


# -----------------------------------------------------------------------------
# Reading config files and flags


def resolve(argv):
    """(config, sources) for argv, a list of config files and --key=value (or --key value) flags: every key
    checked, and for each key where its value came from ('default', a config file's path, or 'flag')."""
    files, flags = split_args(argv)
    config, sources = dict(DEFAULTS), dict.fromkeys(DEFAULTS, 'default')
    for path in files or [QUICKSTART]:
        values, where = read_file(path)
        for key, value in values.items():
            config[key], sources[key] = checked(key, value, where[key]), where[key]
    for key, text, arg in flags:
        config[key], sources[key] = checked(key, parse_value(text), arg), 'flag'
    check_ranges(config)
    return config, sources


def split_args(argv):
    """(config files, [(key, value text, the argument as written)])."""
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
    return files, flags


def parse_value(text):
    """A Python literal when it is one (3, 1e-3, True, None, 'x'), else the bare text as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def read_file(path):
    """({key: value}, {key: the file that set it}) for a config file, run statement by statement so that each
    key is traced to the file that set it last (this one, or one it inherits). Any error in it is one line
    that names the file and line."""
    if not os.path.isfile(path):
        raise SystemExit(f"config file {path!r} not found (arguments are config files or --key=value flags)")
    with open(path) as f:
        text = f.read()
    try:
        tree = ast.parse(text, path)
    except SyntaxError as e:
        raise SystemExit(f"{path} line {e.lineno}: {e.msg}") from None
    namespace, sources, inherited = {'__file__': path}, {}, {}

    def inherit(name):
        base = os.path.join(os.path.dirname(path), name)
        if not os.path.isfile(base):
            raise SystemExit(f"{path}: inherit({name!r}) found no config file {base}")
        values, where = read_file(base)
        namespace.update(values)
        inherited.update(where)

    namespace['inherit'] = inherit
    for statement in tree.body:
        before = dict(namespace)
        inherited.clear()
        try:
            exec(compile(ast.Module([statement], []), path, 'exec'), namespace)
        except SystemExit:
            raise
        except Exception as e:  # a config file is Python: any error in it is the user's to fix
            raise SystemExit(f"{path} line {statement.lineno}: {type(e).__name__}: {e}") from None
        # what the statement assigned by name (an equal value too), or changed in any other way
        named = {node.id for node in ast.walk(statement)
                 if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
        for key, value in namespace.items():
            if key in named or key in inherited or key not in before or before[key] is not value:
                sources[key] = inherited.get(key, path) if key not in named else path
    values = {key: value for key, value in namespace.items()
              if not key.startswith('_') and key != 'inherit' and not isinstance(value, type(sys))}
    return values, {key: sources[key] for key in values}


def checked(key, value, where):
    """value, if it suits key (an int is fine where a float is wanted); one clear line otherwise."""
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


# -----------------------------------------------------------------------------
# What a person reads: --help and --print_config


def meaning(key):
    return TRAINING_KEYS[key][1] if key in TRAINING_KEYS else MODEL_KEYS[key][1]


def usage(script, examples):
    """--help: how to call the script, then every key with its default and meaning."""
    def rows(keys):
        return '\n'.join(f"  {key:<18} {DEFAULTS[key]!r:<12} {meaning(key)}" for key in keys)

    return (f"usage: python {script} [config.py ...] [--key=value ...] [--print_config]\n\n{examples.strip()}\n\n"
            "Settings: the defaults below, then each config file in order (config/quickstart.py when none is\n"
            "given), then the flags; later ones win. --print_config prints every resolved key and where it came\n"
            f"from, and exits.\n\ntraining keys, default, meaning:\n{rows(TRAINING)}\n\n"
            f"model keys (GPTConfig in model.py), default, meaning:\n{rows(MODEL_KEYS)}")


def config_text(config, sources):
    """One line per key: `key = <python literal>  # <where it came from>`."""
    return '\n'.join(f"{key} = {value!r}  # {sources[key]}" for key, value in config.items())


def from_command_line(argv, script, examples):
    """resolve(argv) for a script's command line, answering --help and --print_config first (and exiting)."""
    if '-h' in argv or '--help' in argv:
        print(usage(script, examples))
        sys.exit(0)
    show = '--print_config' in argv
    try:
        config, sources = resolve([arg for arg in argv if arg != '--print_config'])
    except SystemExit as e:  # under torchrun every process reads the same arguments: rank 0 says it, once
        if os.environ.get('RANK', '0') != '0' and isinstance(e.code, str):
            time.sleep(RANK0_FIRST_S)  # torchrun stops this process here once rank 0 has exited with the line
            raise SystemExit(1) from None
        raise
    if show:
        print(config_text(config, sources))
        sys.exit(0)
    return config, sources
