# The paper's scaling ladder, dense 110M (its appendix table): 12 x 768, 16 heads, context 2048.
# ffn_hidden 3072 is the non-gated width; --activation=swiglu takes 2/3 of it (2048), same parameters.
#   python train.py config/dense_110m.py --activation=swiglu
inherit('dense_recipe.py')  # FineWeb, context 2048, the paper's AdamW schedule
out_dir = 'out/dense_110m'

n_layer = 12
n_head = 16
n_embd = 768
ffn_hidden = 3072
init_std = 0.0228  # sqrt(2 / (5 * n_embd))
