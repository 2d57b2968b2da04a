# The MoE 1B-active / 7B-total with gated PolyNorm experts, down(PolyNorm(gate(x)) * up(x)), 1024 wide like the
# SwiGLU experts (same parameters). One PolyNorm per MoE layer, shared by its experts, as the paper's MoE;
# --poly_per_expert=True gives each expert its own coefficients instead, as Motif's large MoE does
# (64 x 4 per layer instead of 4: a negligible number of parameters, and no weight decay on them).
inherit('moe_1b7b.py')
out_dir = 'out/moe_1b7b_polynorm_glu'
activation = 'polynorm_glu'
poly_per_expert = False
