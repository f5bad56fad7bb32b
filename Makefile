# hvd_hier: make install | make test | make demo | make results | make lm-tune | make lm-quality | make bench | make bench-network | make gpu-check | make clean
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The torch build found on this machine's disk; an installed torch >= 2.1 is kept.
TORCH_SPEC ?= torch==2.13.0
NP ?= 4

EXT_SOURCES := $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.h csrc/cpu/*.cpp csrc/cuda/*.cu cmake/*.cmake) CMakeLists.txt setup.py

.PHONY: install test unit coverage demo results lm-tune lm-quality lm-cluster lm-cluster-bits bench bench-e2e bench-network soak cuda-check gpu-check clean

$(VENV)/.deps: requirements.txt scripts/build_horovod.sh $(wildcard scripts/patches/*.patch)
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if ! $(PY) -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))' 2>/dev/null; then
	  $(PIP) install -q "$(TORCH_SPEC)"
	fi
	$(PIP) install -q -r requirements.txt
	scripts/build_horovod.sh $(PY)
	touch $@

$(VENV)/.ext: $(VENV)/.deps $(EXT_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c 'import hvd_hier, hvd_hier._C'
	touch $@

install: $(VENV)/.ext  ## create .venv with torch, Horovod (Gloo) and hvd_hier
	build=$$(horovodrun --check-build)  # captured whole: grep -q on a pipe would cut it short
	grep -q '\[X\] PyTorch' <<<"$$build" || { echo "$$build"; echo "Horovod lacks PyTorch"; exit 1; }
	grep -q '\[X\] Gloo' <<<"$$build" || { echo "$$build"; echo "Horovod lacks Gloo"; exit 1; }

cuda-check: install  ## compile every CUDA source (no GPU needed) for sm_80 and sm_90
	if ! command -v nvcc >/dev/null; then echo "cuda-check: nvcc not found; skipping"; exit 0; fi
	cmake -S . -B build/cuda-check -G Ninja -DPython_EXECUTABLE=$(CURDIR)/$(PY) \
	  -DHVD_HIER_CUDA_COMPILE_ONLY=ON -DCMAKE_CUDA_COMPILER=$$(command -v nvcc) >/dev/null
	cmake --build build/cuda-check
	echo "cuda-check: all CUDA sources compile for sm_80 and sm_90"

GPU_CHECK_OUT ?= gpu_check
# No install step: on a GPU machine the system python3 (with a CUDA build of torch) is used as it
# is, without Horovod; the extension is built into build/gpu-check (docs/GPU.md).
gpu-check:  ## one GPU: build the CUDA kernels, test them, time them; results in gpu_check/
	scripts/gpu_check.sh --python $(PYTHON) $(GPU_CHECK_OUT)

test: install cuda-check  ## the whole suite (unit + horovodrun --gloo)
	rc=0; OMP_NUM_THREADS=1 $(PY) -m pytest tests -v --durations=40 || rc=$$?
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests, which is a failure"; exit 1; fi
	exit $$rc

unit: install  ## only tests/unit (no processes): the fast loop
	$(PY) -m pytest tests/unit -v

COV_PTH = $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/hvd_hier_coverage.pth
COVERAGE_TESTS ?= tests
coverage: install  ## line coverage of hvd_hier/ over make test's tests (COVERAGE_TESTS), every rank counted
	echo "import coverage; coverage.process_startup()" > $(COV_PTH)
	rm -rf .coverage_data; mkdir -p .coverage_data
	rc=0; COVERAGE_PROCESS_START=$(CURDIR)/.coveragerc OMP_NUM_THREADS=1 \
	  $(PY) -m pytest $(COVERAGE_TESTS) -q || rc=$$?
	rm -f $(COV_PTH)
	$(PY) -m coverage combine -q --rcfile=.coveragerc && $(PY) -m coverage report --rcfile=.coveragerc | grep '^TOTAL'
	exit $$rc

demo: install  ## sync SGD vs K-AVG vs Hier-AVG on digits, 3 seeds: table + plots in demo_results/
	$(PY) examples/compare.py --preset demo --out-dir demo_results

results: install  ## the paper's comparison on mnist5k (8 ranks, 3 seeds): docs/results/mnist5k/
	$(PY) examples/compare.py --preset paper --out-dir docs/results/mnist5k

LM_TUNED ?= docs/results/lm_tune/chosen.json
LM_PLAN ?= docs/results/lm/plan_100mbit.json
lm-tune: install  ## the LM benchmark's learning rates on the validation split (docs/LM.md)
	$(PY) examples/lm/sweep.py --preset tune --out-dir docs/results/lm_tune

lm-quality: install  ## the LM comparison at equal tokens, 8 ranks, 3 seeds: docs/results/lm/
	$(PY) examples/lm/sweep.py --preset quality --out-dir docs/results/lm \
	  $$([ -f $(LM_TUNED) ] && echo --tuned $(LM_TUNED)) $$([ -f $(LM_PLAN) ] && echo --plan $(LM_PLAN))

lm-cluster: install  ## the LM's wall-clock to a target loss on the simulated cluster (root): docs/results/lm_cluster/
	$(PY) examples/lm/sweep.py --preset cluster --out-dir docs/results/lm_cluster \
	  $$([ -f $(LM_TUNED) ] && echo --tuned $(LM_TUNED)) $$([ -f $(LM_PLAN) ] && echo --plan $(LM_PLAN))

LM_BITS_ROLES = sync,torch,outer8,int8,int2,topk,frag4
lm-cluster-bits: install  ## the same, for the fewer-bits codecs and fragments beside their baselines (root): docs/results/lm_cluster_fewer_bits/
	mkdir -p docs/results/lm_cluster_fewer_bits
	[ -f docs/results/lm_cluster_fewer_bits/target.json ] || cp docs/results/lm_cluster/target.json docs/results/lm_cluster_fewer_bits/
	$(PY) examples/lm/sweep.py --preset cluster --repeats 2 --out-dir docs/results/lm_cluster_fewer_bits \
	  --tuned $(LM_TUNED) --roles $(LM_BITS_ROLES)

bench: install  ## the memory side of an averaging: fused vs PyTorch vs Horovod vs copy bound
	OMP_NUM_THREADS=$$(nproc) $(PY) benchmarks/bench_average.py --json bench.json

soak: install  ## 20,000 steps under horovodrun -np 4: flat memory, no leaks (docs/results/soak.json)
	OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR):$(CURDIR)/tests timeout 1800 horovodrun -np 4 \
	  -H localhost:4 --gloo $(PY) tests/parallel/workers/soak.py 20000 docs/results/soak.json

NET_OUT ?= bench_network
bench-network: install  ## 2 namespaces with a shaped link: Hier-AVG vs Horovod vs PyTorch (root)
	$(PY) benchmarks/cluster/bench_network.py --out-dir $(NET_OUT)

bench-e2e: install  ## one local and one global averaging of ResNet-50 under horovodrun -np 4
	OMP_NUM_THREADS=1 horovodrun -np $(NP) -H localhost:$(NP) --gloo $(PY) benchmarks/bench_e2e.py --json bench_e2e.json

clean:
	rm -rf build hvd_hier/_C*.so *.egg-info $(VENV)/.ext
