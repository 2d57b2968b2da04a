# Tiny Shakespeare, one token per character (65 of them): a first run that fits a laptop CPU in minutes.
#   python data/shakespeare_char/prepare.py          (downloads the 1 MB text once; or --input PATH)
#   python train.py config/shakespeare_char.py
#   python sample.py --out_dir=out/shakespeare_char
# On a GPU, nanoGPT's baby size: --n_layer=6 --n_head=6 --n_embd=384 --ffn_hidden=1536 --block_size=256
#   --micro_batch_size=64 --tokens_per_step=16384 --learning_rate=1e-3 --min_lr=1e-4

dataset = 'shakespeare_char'
out_dir = 'out/shakespeare_char'

# model: 0.8 M parameters
vocab_size = None  # the data's: 65 characters, padded to 128
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
ffn_hidden = 512
activation = 'polynorm'
act_checkpointing = False  # recomputing PolyNorm's powers saves memory a model this small does not need

# optimization: 2 M tokens, about two passes over the 1 M characters of train text
tokens_per_step = 2048  # 16 sequences of 128 characters
micro_batch_size = 16
learning_rate = 3e-3
min_lr = 3e-4
warmup_steps = 100
max_steps = 1000

eval_interval = 200
eval_steps = 20
log_interval = 25
ckpt_interval = 200
