"""Ad-hoc GPU profile of the Triton kernel: kernel-only times, launch configs, host overhead, sort."""
import cProfile, io, os, pstats, sys, time
import torch, triton, triton.testing as tt
from listmle_kernels import listmle_loss
from listmle_kernels import triton_listmle as tk
from listmle_kernels._inputs import parse_inputs

dev = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = dev == "cpu"

class Recorder:
    def __init__(self, fn): self.fn, self.last = fn, None
    def __getitem__(self, grid):
        launch = self.fn[grid]
        def go(*a, **k):
            self.last = launch(*a, **k)
            return self.last
        return go
rec = Recorder(tk._listmle_kernel); tk._listmle_kernel = rec

def make(B, L, ragged=True, labels_sort=False):
    g = torch.Generator(device=dev).manual_seed(0)
    s = torch.randn(B, L, device=dev, generator=g)
    y = torch.randint(0, 4, (B, L), device=dev, generator=g).float()
    n = torch.randint(max(1, L // 2), L + 1, (B,), device=dev, generator=g) if ragged else None
    return parse_inputs(s, y, None, n, None, not labels_sort, "stable", "mean", False, "triton")

def bench(fn):
    if SMALL:
        fn(); return float("nan")
    return tt.do_bench(fn, warmup=25, rep=100)

def kinfo():
    k = rec.last
    try:
        return f"regs {k.n_regs} spills {k.n_spills} warps {k.metadata.num_warps} shared {k.metadata.shared}"
    except Exception as e:
        return f"(no info: {e})"

def config(rows, warps):
    tk.launch_config = lambda *a: (rows, warps)

orig_config = tk.launch_config
print("== A: kernel only (triton_listmle), input order, ragged float32; GB/s = minimal bytes / time")
shapes = [] if os.environ.get("SKIP_A") else [(16384, 4096), (65536, 1024), (4096, 4096), (65536, 128), (16384, 100), (256, 100)] if not SMALL else [(4, 10)]
for B, L in shapes:
    inp = make(B, L)
    sib, block, chunks = tk.row_geometry(L, False)
    rows0, warps0 = orig_config(block, chunks, B, False, tk.sm_count(torch.device(dev)))
    for grad in (False, True):
        tk.launch_config = orig_config
        ms = bench(lambda: tk.triton_listmle(inp, 0, B, grad))
        nbytes = B * L * 4 * (2 if grad else 1)
        print(f"{B:6d} x {L:5d} grad={grad!s:5} block {block} chunks {chunks} rows {rows0} warps {warps0}: "
              f"{ms:.4f} ms {nbytes / ms / 1e6:7.0f} GB/s | {kinfo()}", flush=True)
    # sweep warps/rows with grad
    if chunks == 1:
        for rows in sorted({max(1, r) for r in (rows0 // 2, rows0, rows0 * 2)}):
            for warps in (2, 4, 8, 16, 32):
                if not 1 <= rows * block // (warps * 32) <= 64 or (rows, warps) == (rows0, warps0):
                    continue
                config(rows, warps)
                try:
                    ms = bench(lambda: tk.triton_listmle(inp, 0, B, True))
                    print(f"   rows {rows} warps {warps}: {ms:.4f} ms {B*L*8/ms/1e6:7.0f} GB/s | {kinfo()}", flush=True)
                except Exception as e:
                    print(f"   rows {rows} warps {warps}: failed {type(e).__name__}", flush=True)
    tk.launch_config = orig_config
    del inp; torch.cuda.empty_cache() if dev == "cuda" else None

if dev == "cuda" and not SMALL and not os.environ.get("SKIP_A"):
    print("== A2: MAX_BLOCK 1024/2048 at 16384 x 4096 (chunked two-pass)")
    inp = make(16384, 4096)
    for mb in (1024, 2048):
        tk.MAX_BLOCK = mb
        for warps in (4, 8, 16):
            config(1, warps)
            ms = bench(lambda: tk.triton_listmle(inp, 0, 16384, True))
            print(f"   MAX_BLOCK {mb} warps {warps}: {ms:.4f} ms {16384*4096*8/ms/1e6:7.0f} GB/s | {kinfo()}", flush=True)
    tk.MAX_BLOCK = 4096; tk.launch_config = orig_config
    del inp

print("== C: sort by labels: in-kernel sort vs torch pre-pass (ORDER_GIVEN)")
for B, L in ([(16384, 4096), (16384, 1024), (65536, 128), (256, 100), (16, 10)] if not SMALL else [(4, 10)]):
    inp = make(B, L, labels_sort=True)
    tk.SORT_MAX_BLOCK = 4096
    ms_in = bench(lambda: tk.triton_listmle(inp, 0, B, True)); info_in = kinfo()
    tk.SORT_MAX_BLOCK = 0
    ms_pre = bench(lambda: tk.triton_listmle(inp, 0, B, True)); info_pre = kinfo()
    real = torch.ones(B, L, dtype=torch.bool, device=dev)
    from listmle_kernels.target_order import target_order
    ms_order = bench(lambda: target_order(inp.labels, real, False, 0))
    print(f"{B:6d} x {L:5d}: in-kernel {ms_in:.4f} ms [{info_in}] | pre-pass {ms_pre:.4f} ms [{info_pre}] "
          f"(of which order {ms_order:.4f})", flush=True)
    tk.SORT_MAX_BLOCK = 4096
    del inp

print("== B: host overhead, back to back, 16 x 10 (ms per call)")
def b2b(fn, n=300):
    fn(); torch.cuda.synchronize() if dev == "cuda" else None
    t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize() if dev == "cuda" else None
    return (time.perf_counter() - t) * 1e3 / n
g = torch.Generator(device=dev).manual_seed(0)
s = torch.randn(16, 10, device=dev, generator=g).requires_grad_()
y = torch.randint(0, 4, (16, 10), device=dev, generator=g).float()
n = torch.randint(5, 11, (16,), device=dev, generator=g)
x = torch.zeros(16, 10, device=dev)
inp = parse_inputs(s, y, None, n, None, True, "stable", "mean", False, "triton")
steps = {
    "one torch op (x.add_)": lambda: x.add_(1),
    "parse_inputs validate=False": lambda: parse_inputs(s, y, None, n, None, True, "stable", "mean", False, "triton"),
    "parse_inputs validate=True": lambda: parse_inputs(s, y, None, n, None, True, "stable", "mean", True, "triton"),
    "triton_listmle grad": lambda: tk.triton_listmle(inp, 0, 16, True),
    "listmle_loss fwd validate=False": lambda: listmle_loss(s.detach(), y, lengths=n, validate=False),
    "listmle_loss+grad validate=False": lambda: torch.autograd.grad(listmle_loss(s, y, lengths=n, validate=False), s),
    "listmle_loss+grad validate=True": lambda: torch.autograd.grad(listmle_loss(s, y, lengths=n), s),
    "listmle_loss+grad labels": lambda: torch.autograd.grad(listmle_loss(s, y, lengths=n, respect_input_order=False, validate=False), s),
    "listmle_loss+grad torch backend": lambda: torch.autograd.grad(listmle_loss(s, y, lengths=n, validate=False, backend="torch"), s),
}
for name, fn in steps.items():
    print(f"  {name:40s} {b2b(fn):.4f} ms", flush=True)
pr = cProfile.Profile()
pr.enable()
for _ in range(300):
    torch.autograd.grad(listmle_loss(s, y, lengths=n), s)
pr.disable()
st = io.StringIO(); pstats.Stats(pr, stream=st).sort_stats("tottime").print_stats(25); print(st.getvalue()[:6000])
