# The paper's MoE model, OLMoE-1B-7B's shape: 16 layers x 2048, 64 experts, top-8, QK-norm.
# About 6.92 B parameters in all, 1.28 B active per token. Shared by the moe_1b7b_<activation>.py configs.
# AdamW state for 7 B parameters does not fit one GPU beside DDP's full replica, so these configs shard
# parameters, gradients and optimizer state with FSDP2 (fsdp = True). Two nodes of 8 GPUs:
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
#       train.py config/moe_1b7b_polynorm.py

# model
n_layer = 16
n_head = 16
n_embd = 2048
block_size = 4096
vocab_size = 50304
qk_norm = True
n_experts = 64
top_k = 8
moe_ffn_hidden = 1536  # SwiGLU takes 2/3 of it: 1024, as OLMoE
activation = 'polynorm'
lb_weight = 0.01
z_weight = 0.001
init_std = 0.02

# data
dataset = 'fineweb'

# optimization, as in the paper's MoE runs
tokens_per_step = 4194304  # 1024 sequences of 4096
micro_batch_size = 2
learning_rate = 4e-4
min_lr = 4e-5
warmup_steps = 2500
max_steps = 50000  # 210 B tokens: set it to your token budget
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# system
dtype = 'bfloat16'
compile = True
fsdp = True
eval_interval = 500
eval_steps = 20
log_interval = 10
ckpt_interval = 500
