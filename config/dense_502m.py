# The paper's scaling ladder, dense 502M (its appendix table): 16 x 1536, 16 heads, context 2048.
# ffn_hidden 6144 is the non-gated width; --activation=swiglu takes 2/3 of it (4096), same parameters.
#   python train.py config/dense_502m.py --activation=swiglu
inherit('dense_recipe.py')  # FineWeb, context 2048, the paper's AdamW schedule
out_dir = 'out/dense_502m'

n_layer = 16
n_head = 16
n_embd = 1536
ffn_hidden = 6144
init_std = 0.0161  # sqrt(2 / (5 * n_embd))
