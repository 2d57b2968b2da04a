# The quick start: what `python train.py` runs when no config file is given. A small PolyNorm model on the
# offline stdlib corpus (bytes of Python's own standard library, made on first use), a few minutes on two CPU
# cores; the training keys' defaults (settings.py) are this run's, so only the model is set here.

dataset = 'stdlib'

# model: GPTConfig's defaults are a small GPU model (6 x 384, context 256); this one trains in CPU minutes
block_size = 128
vocab_size = None  # the data's vocabulary (meta.json), rounded up to a multiple of 64
n_layer = 4
n_head = 4
n_embd = 128
ffn_hidden = 512
activation = 'polynorm'
act_checkpointing = False  # recomputing PolyNorm's powers in backward saves memory a model this small does not need
