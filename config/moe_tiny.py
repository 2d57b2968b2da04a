# A Mixture-of-Experts model small enough for a CPU: OLMoE's recipe (dropless top-k routing, QK-norm,
# load-balancing and z losses, one PolyNorm per MoE layer) on the offline stdlib corpus, in a few minutes.
#   python train.py config/moe_tiny.py
#   python train.py config/moe_tiny.py --activation=swiglu      (the baseline, same parameters)

dataset = 'stdlib'
out_dir = 'out/moe_tiny'

# model: 8 experts of width 128, 2 per token: 1.4 M parameters in all, 0.6 M active per token
vocab_size = None  # the data's: 256 bytes
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
n_experts = 8
top_k = 2
moe_ffn_hidden = 128
qk_norm = True
activation = 'polynorm'
act_checkpointing = False

# optimization
tokens_per_step = 2048
micro_batch_size = 16
learning_rate = 3e-3
min_lr = 3e-4
warmup_steps = 100
max_steps = 1000

eval_interval = 200
eval_steps = 20
log_interval = 25
ckpt_interval = 200
