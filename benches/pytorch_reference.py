"""PyTorch eager reference for `cargo bench --bench throughput`: one network trained the way
researchers train it today, with the same data, batch, optimizer, masking and evaluation
cadence as the lth engine, so that both numbers come from the same invocation.

Usage: python benches/pytorch_reference.py --model lenet|conv2 --steps N --eval-every K
       [--device cpu|cuda] [--data DIR] [--masked] [--tf32]
Prints one JSON line: {"model", "device", "steps", "seconds", "steps_per_second",
"peak_memory_bytes", "masked"}.
"""

import argparse
import gzip
import json
import os
import resource
import struct
import subprocess
import time

import torch


def gpu_memory_used():
    """Memory in use on GPU 0 in bytes, from nvidia-smi (None without it)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True, text=True, check=True,
        ).stdout
        return float(out.strip()) * 1048576
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)


def find(folder, name):
    for candidate in (os.path.join(folder, name + ".gz"), os.path.join(folder, name)):
        if os.path.exists(candidate):
            return candidate
    raise SystemExit(f"missing {name} in {folder}")


def load(folder, device):
    x = read_idx(find(folder, "train-images-idx3-ubyte")).float().div_(255).unsqueeze(1)
    y = read_idx(find(folder, "train-labels-idx1-ubyte")).long()
    xt = read_idx(find(folder, "t10k-images-idx3-ubyte")).float().div_(255).unsqueeze(1)
    yt = read_idx(find(folder, "t10k-labels-idx1-ubyte")).long()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    val, train = perm[:5000], perm[5000:]
    return [t.to(device) for t in (x[train], y[train], x[val], y[val], xt, yt)]


def lenet():
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, 300), torch.nn.ReLU(),
        torch.nn.Linear(300, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )


def conv2():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(64 * 14 * 14, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["lenet", "conv2"], default="lenet")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--masked", action="store_true")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on GPUs (default: IEEE float32)")
    args = ap.parse_args()
    # PyTorch's defaults would run cuDNN convolutions in TF32; the engine computes in IEEE
    # float32 unless told otherwise, so the reference does the same.
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    torch.manual_seed(0)
    x, y, xv, yv, xt, yt = load(args.data, device)
    net = (lenet() if args.model == "lenet" else conv2()).to(device)
    lr = 1.2e-3 if args.model == "lenet" else 2e-4
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    masks = {}
    if args.masked:
        # Half the weights of every prunable tensor pruned by magnitude, as the engine's bench.
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                k = p.numel() // 2
                threshold = p.detach().abs().flatten().kthvalue(k).values
                masks[name] = (p.detach().abs() > threshold).float()
                p.data.mul_(masks[name])
    params = dict(net.named_parameters())
    batch = 60
    n = len(y)

    def evaluate():
        net.eval()
        with torch.no_grad():
            for xs, ys in ((xv, yv), (xt, yt)):
                correct = torch.zeros((), device=device)
                for i in range(0, len(ys), 2500):
                    out = net(xs[i : i + 2500])
                    correct += (out.argmax(1) == ys[i : i + 2500]).sum()
                correct.item()
        net.train()

    def step(it):
        epoch, pos = divmod(it, n // batch)
        if pos == 0:
            step.perm = torch.randperm(n, device=device)
        idx = step.perm[pos * batch : (pos + 1) * batch]
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for name, m in masks.items():
            params[name].grad.mul_(m)
        opt.step()

    step.perm = torch.randperm(n, device=device)
    for it in range(20):  # warm-up
        step(it)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # Evaluation points as the engine's: the start, every multiple of eval_every, the end.
    start = time.perf_counter()
    evaluate()
    for it in range(args.steps):
        step(it)
        if (it + 1) % args.eval_every == 0 or it + 1 == args.steps:
            evaluate()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # On a GPU, as the engine measures it: the device's used memory at the end of the run
    # (nvidia-smi, CUDA context included); PyTorch's own peak allocation as a fallback.
    peak = (
        gpu_memory_used() or torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(json.dumps({
        "model": args.model,
        "device": args.device,
        "steps": args.steps,
        "seconds": seconds,
        "steps_per_second": args.steps / seconds,
        "peak_memory_bytes": peak,
        "masked": args.masked,
    }))


if __name__ == "__main__":
    main()
