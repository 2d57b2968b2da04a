# The paper's MoE 1B-active / 7B-total with SwiGLU experts of width 1024 (the OLMoE baseline).
inherit('moe_1b7b.py')
out_dir = 'out/moe_1b7b_swiglu'
activation = 'swiglu'
