# Fresh machine: `make run` (main job on the bundled sample data) and `make test` (the test suite).
# Both create the virtual environment and install the pinned dependencies first.
PYTHON ?= python3.11
VENV ?= .venv
LOCK_HASH := $(shell sha1sum requirements.lock | cut -c1-12)
STAMP := $(VENV)/.installed-$(LOCK_HASH)

export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := False
export MPLBACKEND := Agg
export COLUMNS ?= 160
export PYTHONPATH := $(CURDIR)/src

.PHONY: install lint format run test report predict retrain rollback viz pretrain-study clean-outputs bench bench-gpu airflow

install: $(STAMP)

$(STAMP): requirements.lock
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -r requirements.lock
	@rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(VENV)/bin/kedro run --pipeline=train

report: install
	$(VENV)/bin/kedro run --pipeline=report

predict: install
	$(VENV)/bin/kedro run --pipeline=predict

# Scheduled retraining: validate, train a challenger, promote it only if it beats the champion.
retrain: install
	$(VENV)/bin/kedro run --pipeline=retrain

# Restore the previous champion (the registry records the rollback; REASON="why" is recorded too).
rollback: install
	$(VENV)/bin/kedro run --pipeline=rollback $(if $(REASON),--params="retrain.rollback_reason=$(REASON)")

# Pretraining without downloads: a backbone pretrained on in-domain crops vs training from scratch
# (conf/pretrain_study; report in data/08_reporting/pretrain_study/report.html). Not part of `make run`.
pretrain-study: install
	$(VENV)/bin/kedro run --pipeline=pretrain_backbone
	KEDRO_ENV=pretrain_study $(VENV)/bin/kedro run --env=pretrain_study --pipeline=train

viz: install
	$(VENV)/bin/kedro viz build

# Airflow DAGs (kedro-airflow) in ops/airflow: nightly retrain; the study (data, one task per experiment, report).
airflow: install
	$(VENV)/bin/kedro airflow create --pipelines=retrain --group-by memory --target-dir ops/airflow
	$(VENV)/bin/kedro airflow create --pipelines=study --group-by namespace --target-dir ops/airflow \
	  --jinja-file ops/airflow/dag_template.j2

# Lint and format check (ruff, pinned in requirements.lock); CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: install
	$(VENV)/bin/python -m pytest

# Speed and accuracy against plain torchvision / pycocotools; rewrites docs/benchmarks.md
# (about 90 minutes on 2 CPU cores). `make bench BENCH_ARGS=--quick` for a smoke run.
bench: install
	$(VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

# The GPU check (about 8 min on one GPU; docs/benchmarks-gpu.md); BENCH_ARGS="--dry-run --out DIR" on a CPU.
bench-gpu: install
	$(VENV)/bin/python benchmarks/bench_gpu.py $(BENCH_ARGS)

clean-outputs:
	find data/02_intermediate data/03_primary data/04_feature data/05_model_input data/06_models \
	  data/07_model_output data/08_reporting -mindepth 1 ! -name .gitkeep -delete
