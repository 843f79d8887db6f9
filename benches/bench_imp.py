"""`make bench-imp`: IMP end to end, as a user runs it. Whole `lth run` processes of
benches/imp-lenet.toml (one seed, then eight) and benches/imp-conv2.toml against the PyTorch
eager IMP loop doing the same work (benches/pytorch_imp.py), alternated in one invocation and
repeated, since this machine drifts. LeNet runs twice per repeat: with the default dense
kernels and with `train.sparse_kernels = "auto"`. Prints markdown tables: each engine's
whole-process wall time (min and median), the ratios, and per-round replica-steps/s of every
repeat.

Usage: python benches/bench_imp.py [--repeats 2] [--workloads lenet1,lenet8,conv2]
       [--lth target/release/lth] [--threads N] [--lenet8-steps 500] [--out /tmp/lth-bench-imp]
       [--set KEY=VALUE ...]   (passed to every lth run)
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def workloads(args):
    """name -> (lth config, seeds, --set overrides, eager arguments, has a sparse variant)."""
    lenet = os.path.join(HERE, "imp-lenet.toml")
    conv2 = os.path.join(HERE, "imp-conv2.toml")
    return {
        "lenet1": (lenet, 1, [], ["--model", "lenet", "--rounds", "12", "--steps", "2000",
                                   "--eval-every", "100"], True),
        "lenet8": (lenet, 8, [f"train.iterations={args.lenet8_steps}"],
                   ["--model", "lenet", "--rounds", "12", "--steps", str(args.lenet8_steps),
                    "--eval-every", "100"], True),
        "conv2": (conv2, 1, [], ["--model", "conv2", "--rounds", "2", "--steps", "100",
                                 "--eval-every", "50"], False),
    }


def run_lth(args, config, seeds, sets, run_dir):
    """One whole `lth run` process: wall seconds and timings.csv's rows."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [args.lth, "run", "--config", config, "--run-dir", run_dir, "--quiet",
           "--checkpoint-minutes", "off", "--plots-dir", os.path.join(args.out, "plots"),
           "--set", f"seeds={list(range(seeds))}"]
    for s in sets + args.set:
        cmd += ["--set", s]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    with open(os.path.join(run_dir, "timings.csv")) as f:
        rounds = [float(r["replica_steps_per_second"]) for r in csv.DictReader(f)]
    with open(os.path.join(run_dir, "rounds.csv")) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["round"]) for r in rows)
    accuracy = statistics.mean(float(r["test_accuracy"]) for r in rows if int(r["round"]) == last)
    density = {}
    for r in rows:
        density[int(r["round"])] = float(r["weights_remaining_pct"])
    return wall, rounds, accuracy, [density[k] for k in sorted(density)]


def run_eager(args, seeds, eager):
    """One whole eager process: wall seconds and per-round replica-steps/s over all seeds."""
    cmd = [args.python, os.path.join(HERE, "pytorch_imp.py"), "--seeds", str(seeds),
           "--data", args.data] + eager
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = [r for r in rows if "round" in r]
    steps = int(eager[eager.index("--steps") + 1])
    per_round = {}
    for r in rows:
        per_round.setdefault(r["round"], []).append(r["seconds"])
    rounds = [len(s) * steps / sum(s) for _, s in sorted(per_round.items())]
    last = max(per_round)
    accuracy = statistics.mean(r["test_accuracy"] for r in rows if r["round"] == last)
    return wall, rounds, accuracy


def rate(v):
    """Replica-steps/s to three significant figures or more (808, 7.12)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workloads", default="lenet1,lenet8,conv2")
    ap.add_argument("--lth", default="target/release/lth")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--data", default="data/fashion-mnist")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lenet8-steps", type=int, default=500)
    ap.add_argument("--out", default="/tmp/lth-bench-imp")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    table = workloads(args)
    os.makedirs(args.out, exist_ok=True)
    summary, details = [], []
    sparse_set = ['train.sparse_kernels="auto"']
    for name in args.workloads.split(","):
        config, seeds, sets, eager, has_sparse = table[name]
        lth, sparse, py = [], [], []
        for rep in range(args.repeats):
            note = f"# {name}: repeat {rep + 1}/{args.repeats}:"
            print(f"{note} lth", file=sys.stderr, flush=True)
            lth.append(run_lth(args, config, seeds, sets, os.path.join(args.out, name)))
            if has_sparse:
                print(f"{note} lth sparse", file=sys.stderr, flush=True)
                sparse.append(run_lth(args, config, seeds, sets + sparse_set,
                                      os.path.join(args.out, name + "-sparse")))
            print(f"{note} eager", file=sys.stderr, flush=True)
            py.append(run_eager(args, seeds, eager))

        def walls(runs):
            w = [r[0] for r in runs]
            return min(w), statistics.median(w)

        (lmin, lmed), (pmin, pmed) = walls(lth), walls(py)
        sparse_cells = "| | "
        if sparse:
            smin, smed = walls(sparse)
            sparse_cells = (f"| {smin:.1f} / {smed:.1f} | {pmin / smin:.2f} / {pmed / smed:.2f} ")
        accuracy = " / ".join(f"{runs[0][2]:.4f}" for runs in (lth, sparse, py) if runs)
        summary.append(
            f"| {name} | {seeds} | {lmin:.1f} / {lmed:.1f} | {pmin / lmin:.2f} / {pmed / lmed:.2f} "
            f"{sparse_cells}| {pmin:.1f} / {pmed:.1f} | {accuracy} |"
        )
        details.append(f"\n{name} ({seeds} seed{'s' if seeds > 1 else ''}), replica-steps/s "
                       "per round, each repeat:\n")
        details.append("| round | weights left (%) | lth | lth sparse auto | PyTorch eager | "
                       "lth x eager | sparse x eager |")
        details.append("|---:|---:|---|---|---|---:|---:|")
        for k, density in enumerate(lth[0][3]):
            lr = [r[1][k] for r in lth]
            sr = [r[1][k] for r in sparse]
            pr = [r[1][k] for r in py]
            cells = [", ".join(rate(v) for v in vs) for vs in (lr, sr, pr)]
            ratio = lambda vs: f"{statistics.median(vs) / statistics.median(pr):.2f}" if vs else ""
            details.append(f"| {k} | {density:.1f} | {' | '.join(cells)} | {ratio(lr)} | {ratio(sr)} |")
    print("| workload | seeds | lth wall s (min / median) | lth x eager | "
          "lth sparse auto wall s | sparse x eager | eager wall s (min / median) | "
          "last round test accuracy (lth / sparse / eager) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(summary))
    print("\n".join(details))


if __name__ == "__main__":
    main()
