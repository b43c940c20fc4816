# Two entry points for a fresh machine (see README.md):
#   make reproduce   set up .venv and run the quick profile (default target: RD curves, tables, crops)
#   make test        set up .venv and run the test suite
#   make ablations / paper_tables / report   the other documented targets, in any order after reproduce
#   make dp_curve   the distortion-perception sweep (guidance / bound) of CGDM and its ablations at one rate
#   make gpu-wheels the two wheels config/zoo/train_on_gpu.sh needs to train the zoo on a rented GPU
# Setup is idempotent: .venv is (re)built only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
export PATH := $(abspath $(BIN)):$(PATH)
# Appended to every snakemake call, e.g. SNAKEMAKE_ARGS="--directory .test" (the README-commands test
# runs the documented targets this way on a temporary copy of .test/).
SNAKEMAKE_ARGS ?=

.PHONY: setup reproduce ablations paper_tables report test test-slow test-workflow lint ci clean-results gpu-wheels

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# One resolver pass for everything (compressai needs numpy<2; a later separate install can break that).
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# The default target `all`: RD curves, tables and crops (everything the report shows except the ablations).
reproduce: setup
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)

ablations: setup
	$(BIN)/snakemake --cores $(CORES) ablations $(SNAKEMAKE_ARGS)

dp_curve: setup
	$(BIN)/snakemake --cores $(CORES) dp_curve $(SNAKEMAKE_ARGS)

paper_tables: setup
	$(BIN)/snakemake --cores $(CORES) paper_tables $(SNAKEMAKE_ARGS)

# Renders what has been built (runs nothing); products not built yet are listed in the report.
report: setup
	$(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

test: setup
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

# A tiny real run of the whole workflow (two cropped Kodak images, 2 rates, a few training steps).
test-workflow: setup
	# Snakemake finds workflow/Snakefile (and profiles/default) in the repository root, where make runs; with
	# --directory .test the workflow's configfile (config/config.yaml) resolves to .test/config/config.yaml.
	$(BIN)/snakemake --cores 2 --directory .test results/rd_curves.pdf ablations
	$(BIN)/snakemake --cores 2 --directory .test results/rd_curves.pdf ablations --dry-run \
		| grep -q "Nothing to be done"
	$(BIN)/snakemake --cores 2 --directory .test dp_curve

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakemake -n ablations --quiet rules
	$(BIN)/snakemake -n dp_curve --quiet rules
	$(BIN)/snakemake -n --directory .test ablations dp_curve --quiet rules
	$(BIN)/snakemake -n --configfile config/paper.yaml --profile profiles/slurm --quiet rules
	# the paper profile's smoke config (run for real by tests/test_paper_smoke.py), generated into a temp dir
	d=$$(mktemp -d) && $(BIN)/python .test/paper/make_config.py $$d/config/config.yaml >/dev/null \
		&& $(BIN)/snakemake -n --directory $$d all ablations paper_tables reference_snapshot --quiet rules; \
		rc=$$?; rm -rf "$$d"; exit $$rc
	# Python style and common bugs (rules: [tool.ruff] in pyproject.toml)
	$(BIN)/ruff check .
	# the Snakefile and rules are formatted by snakefmt ([tool.snakefmt] in pyproject.toml; `snakefmt workflow`
	# formats them)
	$(BIN)/snakefmt --check workflow

ci: test test-workflow lint

# The wheels config/zoo/train_on_gpu.sh installs on a GPU machine that has Python 3.12 and PyTorch but no
# package index (a rented one): the two packages the trainers import that a PyTorch image lacks, into .whl/
GPU_WHEELS := compressai==1.2.8 pytorch-msssim==1.0.0
gpu-wheels: setup
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_34_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean-results:
	rm -rf results/encoded results/metrics results/fid results/published results/results.csv results/ablations.csv
