# Without a GPU, the fused Triton kernels (polykernels.py) run on the CPU through Triton's interpreter. Triton reads
# the switch when polykernels.py is imported, so it is set here, before any test module imports model.py.
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')


@pytest.fixture(scope='module')
def one_thread():
    """Tiny models run as fast on one thread, and two threads per process crawl when the cores are shared
    (two torchrun workers, or other jobs on the machine). A test module asks for it with
    `pytestmark = pytest.mark.usefixtures('one_thread')`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
