# The paper's scaling ladder, dense 226M (its appendix table): 16 x 1024, 16 heads, context 2048.
# ffn_hidden 3840 is the non-gated width; --activation=swiglu takes 2/3 of it (2560), same parameters.
#   python train.py config/dense_226m.py --activation=swiglu
inherit('dense_recipe.py')  # FineWeb, context 2048, the paper's AdamW schedule
out_dir = 'out/dense_226m'

n_layer = 16
n_head = 16
n_embd = 1024
ffn_hidden = 3840
init_std = 0.0198  # sqrt(2 / (5 * n_embd))
