# Two entry points for a fresh machine (see README.md):
#   make reproduce   set up .venv and run the quick profile -> results/rd_curves.pdf
#   make test        set up .venv and run the test suite
# Setup is idempotent: .venv is (re)built only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup reproduce ablations paper_tables report test test-slow test-workflow lint ci clean-results

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# One resolver pass for everything (compressai needs numpy<2; a later separate install can break that).
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(BIN)/snakemake --cores $(CORES) results/rd_curves.pdf

ablations: setup
	$(BIN)/snakemake --cores $(CORES) ablations

paper_tables: setup
	$(BIN)/snakemake --cores $(CORES) paper_tables

report: setup
	$(BIN)/snakemake --cores $(CORES) results/rd_curves.pdf
	$(BIN)/snakemake --report results/report.html

test: setup
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

# A tiny real run of the whole workflow (two cropped Kodak images, 2 rates, a few training steps).
test-workflow: setup
	# --directory .test: the Snakefile's configfile (config/config.yaml) then resolves to .test/config/config.yaml.
	$(BIN)/snakemake --cores 2 --directory .test --snakefile Snakefile results/rd_curves.pdf ablations
	$(BIN)/snakemake --cores 2 --directory .test --snakefile Snakefile results/rd_curves.pdf ablations --dry-run \
		| grep -q "Nothing to be done"

lint: setup
	$(BIN)/snakemake --lint
	$(BIN)/snakemake -n ablations --quiet rules
	$(BIN)/snakemake -n --configfile config/paper.yaml --profile profiles/slurm --quiet rules

ci: test test-workflow lint

clean-results:
	rm -rf results/encoded results/metrics results/fid results/published results/results.csv results/ablations.csv
