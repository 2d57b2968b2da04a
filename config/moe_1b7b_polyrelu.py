# The paper's MoE 1B-active / 7B-total with PolyReLU (one PolyReLU per MoE layer, shared by its experts).
inherit('moe_1b7b.py')
out_dir = 'out/moe_1b7b_polyrelu'
activation = 'polyrelu'
