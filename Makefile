# warmup-lab: every target runs inside .venv (made by `make setup`).
PY      ?= .venv/bin/python
PIP     ?= .venv/bin/pip
EXPERIMENT ?= default
SCALE   ?= cpu
SHELL   := /bin/bash

.PHONY: setup test test-fast schedules sweep study report bench bench-report bench-sweep slurm-start slurm-stop clean help

help:
	@echo "make setup       create .venv and install warmup-lab (editable) with pinned deps"
	@echo "make test        run the whole test suite (CPU), slow tests included: what CI runs"
	@echo "make test-fast   the quick loop: every test but those marked slow (interpreters, sweeps, launchers)"
	@echo "make schedules   draw every schedule preset into results/schedules/"
	@echo "make sweep       run the default warmup study (EXPERIMENT=<name> for one preset, SCALE=full for GPU), then the report"
	@echo "make study       the full CPU study (experiment study: 8 fresh seeds, a 2^(1/2) LR grid, ~75 min on 2 cores), then its report"
	@echo "make report      rebuild the reports from existing sweep directories"
	@echo "make bench       trainer vs plain PyTorch loop, samples/s"
	@echo "make bench-report  report over a synthetic 10,000-run sweep, search overhead at 1,000 probes -> results/bench_report/"
	@echo "make bench-sweep   one fresh make sweep in a scratch directory: where its core time goes -> results/bench_sweep/"
	@echo "make slurm-start / slurm-stop  a one-node SLURM cluster on this machine (root; docs/cluster.md)"

setup:
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PY) -c "import torch, torchvision, warmup_lab; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'warmup_lab', warmup_lab.__version__)"

test:
	$(PY) -m pytest

test-fast:
	$(PY) -m pytest -m "not slow"

schedules:
	$(PY) scripts/schedule_gallery.py --out results/schedules

sweep:
	$(PY) scripts/sweep.py $(EXPERIMENT) --scale $(SCALE)

study:
	$(PY) scripts/sweep.py study

report:
	$(PY) scripts/sweep.py $(EXPERIMENT) --scale $(SCALE) --report-only

bench:
	OMP_NUM_THREADS=1 $(PY) scripts/bench.py --threads 1

bench-report:
	OMP_NUM_THREADS=1 $(PY) scripts/bench_report.py

bench-sweep:
	$(PY) scripts/bench_sweep.py --experiment $(EXPERIMENT)

slurm-start:
	bash scripts/slurm_local.sh start

slurm-stop:
	bash scripts/slurm_local.sh stop

clean:
	rm -rf outputs multirun .pytest_cache
