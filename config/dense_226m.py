# The paper's scaling ladder, dense 226M (its appendix table): 16 x 1024, 16 heads, context 2048.
# ffn_hidden 3840 is the non-gated width; --activation=swiglu takes 2/3 of it (2560), same parameters.
#   python train.py config/dense_226m.py --activation=swiglu

# model
n_layer = 16
n_head = 16
n_embd = 1024
block_size = 2048
vocab_size = 50304
ffn_hidden = 3840
activation = 'polynorm'
init_std = 0.0198  # sqrt(2 / (5 * n_embd))

# data
dataset = 'fineweb'
out_dir = 'out/dense_226m'

# optimization, as the paper's dense runs
tokens_per_step = 262144  # 128 sequences of 2048
micro_batch_size = 16
learning_rate = 3e-4
min_lr = 3e-5
warmup_steps = 2365  # 620 M tokens
max_steps = 40000  # 10.5 B tokens: set it to your token budget
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
