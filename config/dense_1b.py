# The paper's dense 1B model (LLaMA-style), shared by the dense_1b_<activation>.py configs.
# 24 x 2048, 16 heads, context 4096; 1.214 B non-embedding parameters whatever the activation, since
# ffn_hidden is the non-gated width and the gated forms take 2/3 of it (8256 -> 5504).
# Run: torchrun --standalone --nproc_per_node=8 train.py config/dense_1b_polynorm.py
inherit('dense_recipe.py')  # FineWeb, the paper's AdamW schedule

# model
n_layer = 24
n_head = 16
n_embd = 2048
ffn_hidden = 8256
init_std = 0.014  # sqrt(2 / (5 * n_embd))

# a longer context than the ladder's: the same 262,144 tokens per step are 64 sequences of 4096
block_size = 4096
micro_batch_size = 4  # sequences per GPU per forward; 8 GPUs -> 2 accumulation steps
max_steps = 100000  # 26 B tokens: set it to your token budget
