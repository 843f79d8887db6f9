"""PyTorch eager IMP loop for `make bench-imp`: the lottery-ticket recipe as a researcher writes
it in PyTorch today (one network at a time, weights multiplied by a mask), doing the same work
as an `lth run` of benches/imp-*.toml: the same rounds, iterations, batch, optimizer,
evaluation cadence (validation and test sets at the start, every --eval-every steps and at the
end of every round) and layerwise pruning rates, with rewinding to initialization.

Usage: python benches/pytorch_imp.py --model lenet|conv2 --seeds N --rounds R --steps S
       [--eval-every K] [--data DIR]
Prints one JSON line per trained round: {"seed", "round", "density", "seconds",
"steps_per_second", "test_accuracy"}, then {"wall_seconds"} for the whole loop.
"""

import argparse
import json
import time

import torch

from pytorch_reference import conv2, lenet, load

# Layerwise pruning rates of the bench configs (Frankle & Carbin 2019): fully connected 20%,
# convolutions 10%, the output layer 10%.
FC_FRACTION, CONV_FRACTION, OUTPUT_FRACTION = 0.2, 0.1, 0.1


def glorot_(net):
    """Glorot-normal weights and zero biases, as lth initializes."""
    for module in net.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.xavier_normal_(module.weight)
            torch.nn.init.zeros_(module.bias)


def fractions(net):
    """Each prunable weight's name and per-round pruning fraction."""
    weights = [(n, p) for n, p in net.named_parameters() if n.endswith("weight")]
    out = {}
    for i, (name, p) in enumerate(weights):
        if i + 1 == len(weights):
            out[name] = OUTPUT_FRACTION
        elif p.dim() == 4:
            out[name] = CONV_FRACTION
        else:
            out[name] = FC_FRACTION
    return out


def prune(params, masks, rates):
    """Layerwise magnitude pruning: each tensor loses round(rate x remaining) of its survivors."""
    for name, rate in rates.items():
        w, m = params[name].detach(), masks[name]
        remaining = int(m.sum().item())
        remove = round(rate * remaining)
        if remove == 0:
            continue
        scores = torch.where(m.bool(), w.abs(), torch.full_like(w, float("inf")))
        order = scores.flatten().argsort(stable=True)
        flat = m.flatten().clone()
        flat[order[:remove]] = 0
        masks[name] = flat.view_as(m)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["lenet", "conv2"], default="lenet")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--data", default="data/fashion-mnist")
    args = ap.parse_args()
    wall = time.perf_counter()
    device = torch.device("cpu")
    x, y, xv, yv, xt, yt = load(args.data, device)
    lr = 1.2e-3 if args.model == "lenet" else 2e-4
    batch, n = 60, len(y)

    def evaluate(net):
        net.eval()
        accuracy = []
        with torch.no_grad():
            for xs, ys in ((xv, yv), (xt, yt)):
                correct = 0
                for i in range(0, len(ys), 2500):
                    out = net(xs[i : i + 2500])
                    correct += int((out.argmax(1) == ys[i : i + 2500]).sum())
                accuracy.append(correct / len(ys))
        net.train()
        return accuracy[1]

    for seed in range(args.seeds):
        torch.manual_seed(seed)
        net = lenet() if args.model == "lenet" else conv2()
        glorot_(net)
        init = {k: v.clone() for k, v in net.state_dict().items()}
        params = dict(net.named_parameters())
        rates = fractions(net)
        masks = {name: torch.ones_like(params[name]) for name in rates}
        total = sum(m.numel() for m in masks.values())
        for rnd in range(args.rounds + 1):
            start = time.perf_counter()
            if rnd > 0:
                prune(params, masks, rates)
                net.load_state_dict(init)
            with torch.no_grad():
                for name, m in masks.items():
                    params[name].mul_(m)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            perm = torch.randperm(n)
            accuracy = evaluate(net)
            for it in range(args.steps):
                pos = it % (n // batch)
                if it > 0 and pos == 0:
                    perm = torch.randperm(n)
                idx = perm[pos * batch : (pos + 1) * batch]
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for name, m in masks.items():
                    params[name].grad.mul_(m)
                opt.step()
                if (it + 1) % args.eval_every == 0 or it + 1 == args.steps:
                    accuracy = evaluate(net)
            seconds = time.perf_counter() - start
            density = sum(m.sum().item() for m in masks.values()) / total
            print(json.dumps({
                "seed": seed,
                "round": rnd,
                "density": density,
                "seconds": seconds,
                "steps_per_second": args.steps / seconds,
                "test_accuracy": accuracy,
            }), flush=True)
    print(json.dumps({"wall_seconds": time.perf_counter() - wall}), flush=True)


if __name__ == "__main__":
    main()
