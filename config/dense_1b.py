# The paper's dense 1B model (LLaMA-style), shared by the dense_1b_<activation>.py configs.
# 24 x 2048, 16 heads, context 4096; 1.214 B non-embedding parameters whatever the activation, since
# ffn_hidden is the non-gated width and SwiGLU takes 2/3 of it (8256 -> 5504).
# Run: torchrun --standalone --nproc_per_node=8 train.py config/dense_1b_polynorm.py

# model
n_layer = 24
n_head = 16
n_embd = 2048
block_size = 4096
vocab_size = 50304  # gpt2's 50257, padded to a multiple of 64
ffn_hidden = 8256
activation = 'polynorm'
init_std = 0.014  # sqrt(2 / (5 * n_embd))

# data: gpt2-tokenized FineWeb shards (python data/fineweb/prepare.py)
dataset = 'fineweb'

# optimization, as in the paper's dense runs
tokens_per_step = 262144  # 64 sequences of 4096
micro_batch_size = 4  # sequences per GPU per forward; 8 GPUs -> 2 accumulation steps
learning_rate = 3e-4
min_lr = 3e-5  # cosine decay down to this
warmup_steps = 2365  # 620 M tokens
max_steps = 100000  # 26 B tokens: set it to your token budget
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# system
dtype = 'bfloat16'
compile = True
eval_interval = 1000
eval_steps = 50
log_interval = 10
ckpt_interval = 1000
