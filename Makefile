# lth: two commands from a fresh clone.
#   make demo   sets everything up (venv with torch, Fashion-MNIST, release build) and runs the demo
#   make test   sets everything up and runs the whole test suite
# Repeated runs skip what is done. To build against your own libtorch instead of the venv's
# PyTorch: make LIBTORCH=/path/to/libtorch build   (a folder with lib/ and include/), see README.

SHELL := /bin/bash
TORCH_VERSION := 2.11.0
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY_PACKAGES := torch==$(TORCH_VERSION) safetensors numpy pandas
# The stamp names the package list, so adding a package reinstalls (pip skips what is there).
VENV_STAMP := $(VENV)/.lth-$(shell echo '$(PY_PACKAGES)' | md5sum | cut -c1-8)
DATA_DIR := data/fashion-mnist
SYSTEM_DATA := /usr/share/datasets/fashion-mnist
PACKAGE_DATA := usr/share/datasets/fashion-mnist
DATA_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
BIN := target/release/lth

ifdef LIBTORCH
  # Your own libtorch: tch reads LIBTORCH (and LIBTORCH_INCLUDE / LIBTORCH_LIB if they differ).
  TORCH_ENV := LIBTORCH=$(LIBTORCH)
  TORCH_DEP :=
else
  # The venv's PyTorch: tch asks its python for the libtorch paths.
  TORCH_ENV := LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV=$(VENV) PATH=$(VENV)/bin:$$PATH
  TORCH_DEP := $(VENV_STAMP)
endif
CARGO_ENV := $(TORCH_ENV)

.PHONY: demo test setup venv data build lint fmt clippy bench bench-imp bench-sparse gpu-pack fuzz clean-runs
.DEFAULT_GOAL := demo

demo: setup
	./$(BIN) run --preset demo

# The sweep tests submit to a real one-node Slurm (tests/slurm/cluster.sh installs it when
# missing, as root, and starts it); it is stopped again whatever the tests did.
test: setup lint
	bash tests/slurm/cluster.sh start
	$(CARGO_ENV) SLURM_CONF=$${LTH_SLURM_DIR:-/tmp/lth-slurm}/slurm.conf cargo test --release -- --test-threads=2; \
	  status=$$?; bash tests/slurm/cluster.sh stop; exit $$status

setup: venv data build

venv: $(TORCH_DEP)

$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet $(PY_PACKAGES)
	touch $@

# Fashion-MNIST: the Debian package's files when installed; else install the package (root),
# else unpack it into data/ without installing (apt-get download + dpkg -x).
data: $(DATA_DIR)/.ready

$(DATA_DIR)/.ready:
	@set -e; mkdir -p $(DATA_DIR); \
	if [ ! -f $(SYSTEM_DATA)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || true; \
	fi; \
	if [ -f $(SYSTEM_DATA)/train-images-idx3-ubyte.gz ]; then \
	  for f in $(DATA_FILES); do ln -sf $(SYSTEM_DATA)/$$f $(DATA_DIR)/$$f; done; \
	else \
	  echo "unpacking dataset-fashion-mnist into $(DATA_DIR) (apt-get download + dpkg -x)"; \
	  tmp=$$(mktemp -d); (cd $$tmp && apt-get download dataset-fashion-mnist >/dev/null); \
	  dpkg -x $$tmp/dataset-fashion-mnist_*.deb $$tmp/root; \
	  for f in $(DATA_FILES); do cp $$tmp/root/$(PACKAGE_DATA)/$$f $(DATA_DIR)/$$f; done; \
	  rm -rf $$tmp; \
	fi; \
	for f in $(DATA_FILES); do test -s $(DATA_DIR)/$$f || { echo "missing $(DATA_DIR)/$$f"; exit 1; }; done; \
	touch $@

build: $(TORCH_DEP)
	$(CARGO_ENV) cargo build --release

lint: fmt clippy

fmt:
	cargo fmt --check

clippy: $(TORCH_DEP)
	$(CARGO_ENV) cargo clippy --release --all-targets -- -D warnings

# Replica-steps/s of the engine on Fashion-MNIST (results go to BENCHMARKS.md by hand).
bench: setup
	$(CARGO_ENV) cargo bench --bench throughput

# IMP end to end: whole `lth run` processes against the PyTorch eager IMP loop doing the same
# rounds, LeNet also with train.sparse_kernels="auto" (benches/bench_imp.py; about 25 minutes
# on 2 cores). BENCH_IMP_ARGS passes options,
# e.g. BENCH_IMP_ARGS="--workloads lenet1 --repeats 3".
bench-imp: setup
	$(VENV)/bin/python benches/bench_imp.py --python $(VENV)/bin/python $(BENCH_IMP_ARGS)

# One LeNet round dense against sparse kernels, one-shot to 40%-1.3% of the weights (about 3
# minutes on 2 cores; BENCHMARKS.md, "Sparse kernels").
bench-sparse: setup
	bash benches/sparse_sweep.sh

# What a lent GPU machine needs (no Rust there): binaries and data in gpu-carry/, for
# benches/gpu-check.sh (BENCHMARKS.md, "GPU").
gpu-pack: setup
	bash benches/gpu-pack.sh

# Fuzz the IDX and CIFAR-10 readers and the config parser, FUZZ_SECONDS each (cargo-fuzz on
# the stable toolchain via RUSTC_BOOTSTRAP; no sanitizer, libFuzzer's coverage only).
# Inputs that crash land in tests/fuzz/artifacts/<target>/; turn each into a test.
FUZZ_SECONDS ?= 60
TORCH_LIB = $(shell $(VENV)/bin/python -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")' 2>/dev/null)
fuzz: $(TORCH_DEP)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	set -e; for t in idx cifar config; do \
	  mkdir -p tests/fuzz/work/$$t && cp tests/fuzz/seeds/$$t/* tests/fuzz/work/$$t/; \
	  (cd tests/fuzz && $(CARGO_ENV) LD_LIBRARY_PATH=$(TORCH_LIB) RUSTC_BOOTSTRAP=1 \
	    cargo fuzz run -s none --fuzz-dir . $$t work/$$t -- -max_total_time=$(FUZZ_SECONDS)); \
	done

clean-runs:
	rm -rf runs/* plots/*
