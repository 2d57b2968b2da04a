# Without a GPU, the fused Triton kernels (kernels.py) run on the CPU through Triton's interpreter. Triton reads
# the switch when kernels.py is imported, so it is set here, before any test module imports model.py.
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')
