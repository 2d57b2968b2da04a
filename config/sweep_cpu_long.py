# The activation sweep's long CPU preset (python sweep.py --preset cpu-long): a character-level model on Tiny
# Shakespeare trained on about 10 tokens per non-embedding parameter, with an lr grid, 5 seeds, a budget ladder
# and PolyNorm's order ablation (sweep.py's PRESETS hold those sweep settings). The sweep sets activation, seed,
# out_dir, learning_rate and min_lr (at min_lr / learning_rate below times each lr of the grid).
#
# The budget, to retune from a measured throughput (tok/s of one run while another runs beside it):
#   non-embedding parameters N ~ n_layer * (4 * n_embd^2 + 2 * n_embd * ffn_hidden) (attention + FFN; SwiGLU and
#     the gated PolyCom variants take 2/3 of ffn_hidden per matrix, so every activation has the same N);
#     `python model.py config/sweep_cpu_long.py` prints the exact count.
#   tokens per run = max_steps * tokens_per_step, aimed at >= 10 * N.
#   runs = activations * lrs (the grid's own seed) + activations * seeds + (activations - 1) * seeds * rungs
#     + orders * order seeds (SwiGLU runs no rung): 5 * 6 + 5 * 5 + 4 * 5 * 2 + 2 * 1 = 97 with the preset's
#     settings, worth 81 full runs in tokens (the rungs are 0.5 and 0.7 of a run; `python sweep.py --preset
#     cpu-long --plan` counts them).
#   wall time ~ full runs' worth / parallel * tokens per run / (tok/s of one run).
# With n_layer 4, n_embd 64, ffn_hidden 256: N = 197 k, 500 steps of 4,096 tokens = 2.05 M tokens (10.4 per
# parameter, about 2 epochs of Tiny Shakespeare's 1 M training characters).

# data: made by python data/shakespeare_char/prepare.py (sweep.py runs it when the shards are missing)
dataset = 'shakespeare_char'

# model
vocab_size = None  # the data's vocabulary (meta.json), rounded up to a multiple of 64
n_layer = 4
n_head = 4
n_embd = 64
block_size = 128
ffn_hidden = 256  # the non-gated width; the gated activations take 2/3 of it
act_checkpointing = False  # recomputing PolyCom's powers saves memory a model this small does not need

# optimization: learning_rate is the one used without --lrs; with it, each lr of the grid
tokens_per_step = 4096  # 32 sequences of 128 characters
micro_batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
warmup_steps = 25
max_steps = 500

# system and logging: eval_interval sets how finely the speed-ups are interpolated
device = 'cpu'
dtype = 'float32'
compile = False  # the whole model compiled gains little on the CPU; act_impl 'auto' compiles PolyCom itself
eval_interval = 50
eval_steps = 8
log_interval = 10
ckpt_interval = 100
