import sys, torch
from listmle_kernels import triton_listmle as tk
from listmle_kernels._inputs import parse_inputs
B, L, by_labels = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "labels"
g = torch.Generator(device="cuda").manual_seed(0)
s = torch.randn(B, L, device="cuda", generator=g)
y = torch.randint(0, 4, (B, L), device="cuda", generator=g).float()
n = torch.randint(L // 2, L + 1, (B,), device="cuda", generator=g)
inp = parse_inputs(s, y, None, n, None, not by_labels, "stable", "mean", False, "triton")
for _ in range(2):
    tk.triton_listmle(inp, 0, B, True)
torch.cuda.synchronize()
