# The activation sweep's GPU preset (python sweep.py --preset gpu): the paper's dense 110M model (12 x 768,
# 16 heads) on FineWeb with a 1024 context, 1500 steps of 262,144 tokens (0.39 B tokens) per run. At 0.85
# GFLOP per token that is about 15 minutes per run on one H100 at 40% MFU: 6 activations x 3 seeds in
# about 4.5 hours (an estimate from FLOPs, not a measurement). The sweep sets activation, seed and out_dir.
inherit('dense_110m.py')

# data: python data/fineweb/prepare.py downloads 8 train shards (0.8 B tokens, more than one run reads)
dataset = 'fineweb'

# a shorter context and budget than the paper's 2048 and 10 B+ tokens
block_size = 1024
tokens_per_step = 262144  # 256 sequences of 1024
micro_batch_size = 32  # 8 micro-steps on one GPU; lower it if memory runs out
warmup_steps = 100
max_steps = 1500

device = 'cuda'
eval_interval = 100
eval_steps = 20  # 20 x 32 x 1024 = 0.65 M validation tokens
ckpt_interval = 250
