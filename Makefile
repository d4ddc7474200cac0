# recon_plugin: `make demo` and `make test` are the two commands of the README quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench lint browser colmap clean

# The Python packages, then the system libraries they need (libusb for open3d, ffmpeg for ns-render):
# installed with apt-get when run as root, otherwise named; ends by checking `import open3d` and `ns-export`.
install: $(STAMP)
	@bash scripts/system_deps.sh $(VENV)

# Re-runs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/recon-demo

# Headless Chromium for the render-preview browser test (Debian package; skipped when unavailable).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "make browser: could not install chromium; the browser test will be skipped"; \
	  else echo "make browser: chromium missing and cannot be installed here; the browser test will be skipped"; fi; }

# COLMAP for `ns-process-data images` (the photos-only path of nero-shape; Debian package, about 50 packages
# with its Qt and Ceres dependencies, so not part of `make install`).
colmap:
	@command -v colmap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq colmap >/dev/null; \
	  else echo "make colmap: run 'sudo apt-get install colmap' (Debian/Ubuntu) or install COLMAP from colmap.github.io"; exit 1; fi; }

# Two pytest-xdist workers of one torch thread each: most tests are bound by Python, imports and subprocess start-up,
# which one process cannot spread over two cores. Whole modules go to a worker, so module fixtures are built once;
# session fixtures (trained runs) are built once for both workers (tests/cli_helpers.py: build_once).
TEST_WORKERS ?= 2
test: install browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

lint: install
	$(BIN)/ruff check recon_plugin tests bench
	$(BIN)/ruff format --check recon_plugin tests bench

bench: install colmap
	$(BIN)/python bench/rnb_sdf/run.py
	@if [ -f bench/render_queue/run.py ]; then $(BIN)/python bench/render_queue/run.py; fi
	# nero-shape: each head on one torch thread (the README's protocol ran the two at once, a core each).
	rm -rf build/bench/nero_shape
	OMP_NUM_THREADS=1 $(BIN)/python bench/nero_shape/run.py --shading split-sum,plain --workdir build/bench/nero_shape
	OMP_NUM_THREADS=1 $(BIN)/python bench/nero_shape/run.py --shading split-sum,plain --layout transforms
	# Stage II on the split-sum stage-I run and scene kept above.
	OMP_NUM_THREADS=1 $(BIN)/python bench/nero_material/run.py --scene build/bench/nero_shape/scene \
		--shape-config build/bench/nero_shape/runs/split-sum/nero-shape/bench/config.yml --workdir build/bench/nero_material
	$(BIN)/python bench/pbr_fusion/run.py
	# Real captures (../shared/fixtures/real): rnb-sdf on DiLiGenT-MV, nero-shape/-material on DTU scan 37, the
	# LLFF Ethiopian head, and the photos-only path (COLMAP) on scan 37's images.
	$(BIN)/python bench/real/run.py --workdir build/bench/real

clean:
	rm -rf demo_output outputs .pytest_cache
