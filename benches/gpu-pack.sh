#!/usr/bin/env bash
# Packs what benches/gpu-check.sh needs on a lent GPU machine (which has PyTorch but no Rust
# toolchain and no network) into gpu-carry/ (git-ignored, about 40 MB): the release `lth`, the
# throughput benchmark binary and the four Fashion-MNIST files. Run here after `make setup`,
# then hand `gpu-carry` to the device tool as a carried path (BENCHMARKS.md, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
cargo build --release --quiet
bench=$(cargo bench --bench throughput --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "throughput" and m.get("executable"):
        print(m["executable"])')
rm -rf gpu-carry
mkdir -p gpu-carry/bin gpu-carry/data/fashion-mnist
cp target/release/lth gpu-carry/bin/lth
cp "$bench" gpu-carry/bin/throughput
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    cp -L "data/fashion-mnist/$f.gz" gpu-carry/data/fashion-mnist/
done
# The commit the binaries were built from, so that the device's report says which code ran.
git describe --always --dirty > gpu-carry/COMMIT
du -sh gpu-carry
