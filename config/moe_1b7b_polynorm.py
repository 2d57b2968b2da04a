# The paper's MoE 1B-active / 7B-total with PolyNorm (one PolyNorm per MoE layer, shared by its experts).
inherit('moe_1b7b.py')
out_dir = 'out/moe_1b7b_polynorm'
activation = 'polynorm'
