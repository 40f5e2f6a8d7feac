# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hilovit-installed
# The CPU wheel; anything newer pulls several GB of CUDA packages.
TORCH  := torch==2.13.0

.PHONY: install data browser demo demo-results demo-dense test lint bench bench-seg bench-det clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST from Debian (the embedded default dataset); skipped when it cannot be installed.
data:
	@bash scripts/ensure-fashion-mnist.sh

# Chromium and its WebDriver from Debian, for the browser test of `hilovit app`; skipped when they cannot be installed.
browser:
	@bash scripts/ensure-chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) data browser lint
	$(BIN)/python -m pytest

# Train litv2_nano on all of Fashion-MNIST (recipe src/hilovit/train/recipes/fashion-mnist.yaml), then
# evaluate it on the 10,000 test images: per-class accuracy and runs/demo/eval/confusion.png.
DEMO_OUT ?= runs/demo
demo: $(STAMP) data
	$(BIN)/hilovit train --config fashion-mnist --output $(DEMO_OUT) --overwrite
	$(BIN)/hilovit eval --model litv2_nano --checkpoint $(DEMO_OUT) --threads 1 --progress off

# The demo once more, its results recorded in benchmarks/demo/ and the README's figures refreshed from them.
demo-results: demo
	mkdir -p benchmarks/demo
	cp $(DEMO_OUT)/summary.json $(DEMO_OUT)/metrics.csv benchmarks/demo/
	$(BIN)/python scripts/readme_figures.py

# The dense-prediction demos on fashion-scenes, their results recorded under benchmarks/ and the README's
# figures refreshed from them (about an hour on 2 cores): the classifier whose backbone the others start from,
# Semantic FPN from scratch and from that backbone, RetinaNet, Mask R-CNN; each run's predictions.png goes to docs/.
DENSE_RUNS := backbone seg_demo seg_transfer det_demo maskrcnn_demo
demo-dense: $(STAMP) data
	$(BIN)/hilovit train --config fashion-mnist-backbone --output runs/backbone --overwrite --progress log
	$(BIN)/hilovit train --config fashion-scenes --output runs/seg_demo --overwrite --progress log
	$(BIN)/hilovit train --config fashion-scenes --pretrained runs/backbone --output runs/seg_transfer \
		--overwrite --progress log
	$(BIN)/hilovit train --config fashion-scenes-det --pretrained runs/backbone --output runs/det_demo \
		--overwrite --progress log
	$(BIN)/hilovit train --config fashion-scenes-mask --pretrained runs/backbone --output runs/maskrcnn_demo \
		--overwrite --progress log
	for r in $(DENSE_RUNS); do mkdir -p benchmarks/$$r && cp runs/$$r/summary.json runs/$$r/metrics.csv benchmarks/$$r/; done
	cp runs/seg_demo/predictions.png docs/seg_predictions.png
	cp runs/det_demo/predictions.png docs/det_predictions.png
	cp runs/maskrcnn_demo/predictions.png docs/maskrcnn_predictions.png
	$(BIN)/python scripts/readme_figures.py

# bfloat16 rows only where the CPU (or GPU) computes bfloat16 natively: emulated bfloat16 times the emulation.
BENCH_DTYPES = $(shell $(BIN)/python -c "import torch; from hilovit.bench.seg import bf16_skip_reason as r; \
	print('float32' if r(torch.device('cpu')) else 'float32,bfloat16')")

# Everything `make bench` writes is committed under benchmarks/ and feeds the README's figures (half an hour
# on 2 cores): attention mechanisms, whole models (inference, training, torch.compile, breakdown, sweep),
# the data path, the library path now and before the internal reshape (7800cd4), and the attention
# benchmark again, its ratios compared with the first run's (run-to-run stability).
bench: $(STAMP)
	$(BIN)/hilovit bench attention --repeats 10 --dtype $(BENCH_DTYPES) --output benchmarks/attention
	$(BIN)/hilovit bench models --models swin_t,litv2_s --batch 16 --img-size 224 --dtype $(BENCH_DTYPES) \
		--train --compile --breakdown --repeats 6 --warmup 1 --threads 2 --sweep 224,384,512,768,1024 --sweep-batch 1 \
		--output benchmarks/models
	$(BIN)/hilovit bench data --threads 2 --output benchmarks/data
	$(BIN)/python benchmarks/library_path.py --before 7800cd4 --repeats 5 --warmup 1 --rounds 2 --train \
		--output benchmarks/library_path
	$(BIN)/python benchmarks/repeat_check.py --first benchmarks/attention.csv --output benchmarks/attention_repeat \
		-- --repeats 10 --dtype $(BENCH_DTYPES)
	$(BIN)/python scripts/readme_figures.py

# Semantic FPN: semfpn_litv2_s vs semfpn_swin_t at 512x512, 1024x1024 and 2048x512, batch 1 (several minutes).
bench-seg: $(STAMP)
	$(BIN)/hilovit bench seg --repeats 5 --warmup 1 --output benchmarks/seg
	$(BIN)/python scripts/readme_figures.py

# RetinaNet and Mask R-CNN, LITv2-S against Swin-T at 1333x800, float32, inference (the network to its raw head
# outputs; a two-stage detector with 1000 boxes through its box head and 100 through its mask head).
bench-det: $(STAMP)
	$(BIN)/hilovit bench det --repeats 5 --warmup 1 --threads 2 --output benchmarks/det_retinanet
	$(BIN)/hilovit bench det --model mask_rcnn_litv2_s --baseline mask_rcnn_swin_t --repeats 5 --warmup 1 \
		--threads 2 --output benchmarks/det_mask_rcnn
	$(BIN)/python scripts/readme_figures.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
