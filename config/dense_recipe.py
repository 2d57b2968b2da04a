# The paper's dense training recipe, inherited by its dense models (dense_110m, dense_226m, dense_502m and
# dense_1b), which set their size. Not a model of its own: the model keys are GPTConfig's defaults here.

# model keys every dense config shares
vocab_size = 50304  # gpt2's 50257, padded to a multiple of 64
activation = 'polynorm'

# data: gpt2-tokenized FineWeb shards (python data/fineweb/prepare.py)
dataset = 'fineweb'

# optimization, as in the paper's dense runs
tokens_per_step = 262144  # 128 sequences of 2048, 64 of 4096
learning_rate = 3e-4
min_lr = 3e-5  # cosine decay down to this
warmup_steps = 2365  # 620 M tokens
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# the scaling ladder's context and budget; dense_1b.py sets its own
block_size = 2048
micro_batch_size = 16  # sequences per GPU per forward
max_steps = 40000  # 10.5 B tokens: set it to your token budget

# system
dtype = 'bfloat16'
compile = True
eval_interval = 1000
eval_steps = 50
log_interval = 10
ckpt_interval = 1000
