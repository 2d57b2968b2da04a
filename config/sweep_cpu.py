# The activation sweep's CPU preset (python sweep.py --preset cpu): a 0.8M-parameter character-level model
# on Tiny Shakespeare, 200 steps of 4,096 tokens (0.8 M tokens, most of one epoch). On a 2-core AMD EPYC
# shared with other work a run took 100-150 s, 6 activations x 3 seeds 36 minutes. The sweep sets
# activation, seed and out_dir.

# data: made by python data/shakespeare_char/prepare.py (sweep.py runs it when the shards are missing)
dataset = 'shakespeare_char'

# model: ffn_hidden is the non-gated width; SwiGLU takes 2/3 of it, so every activation has the same parameters
vocab_size = None  # the data's vocabulary (meta.json), rounded up to a multiple of 64
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
ffn_hidden = 512
act_checkpointing = False  # recomputing PolyCom's powers saves memory a model this small does not need

# optimization
tokens_per_step = 4096  # 32 sequences of 128 characters
micro_batch_size = 32
learning_rate = 2e-3
min_lr = 2e-4
warmup_steps = 20
max_steps = 200

# system and logging: eval_interval sets how finely the speed-up is interpolated
device = 'cpu'
dtype = 'float32'
compile = False
eval_interval = 20
eval_steps = 8
log_interval = 5
ckpt_interval = 50
