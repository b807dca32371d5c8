# Two commands for users: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean demo-weights

# The committed demo weights were made by this target (CPU, one thread, about an hour each on 2 cores).
# Echo-DND: the legacy loss settings they were trained with are pinned (Adam, i.e. weight decay 0, and the
# variational-bound KL form); the bundle's defaults are now AdamW decay 1e-2 and the paper's prior-form KL.
DEMO_DATA := build/demo_train/Dataset601_PhantomLV

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# -n auto: one pytest worker per core (each runs torch with one thread, see tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -q -n auto tests

demo: $(STAMP)
	$(PY) -m echogains.demo --out demo_output

demo-weights: $(STAMP)
	$(PY) -m echogains make-phantom $(DEMO_DATA) --layout nnunet --n_patients 60 --seed 1000 --labels lv,myo --overwrite
	OMP_NUM_THREADS=1 $(PY) -m monai.bundle run --config_file bundles/echo_dnd/configs/train.json \
		--dataset_dir $(DEMO_DATA) --output_dir build/demo_train/echo_dnd_tiny --network_config tiny --image_size 64 \
		--steps 3000 --batch_size 8 --lr 2e-4 --val_every 250 --val_steps 10 --save_every 250 --seed 0 --device cpu \
		--weight_decay 0 --kl_form vb
	mkdir -p bundles/echo_dnd/models && cp build/demo_train/echo_dnd_tiny/model.pt bundles/echo_dnd/models/model.pt
	OMP_NUM_THREADS=1 $(PY) -m echogains train-ddpm $(DEMO_DATA) build/demo_train/ddpm_tiny --config tiny --steps 3000 \
		--batch_size 8 --seed 0 --sample_every 500 --checkpoint_every 250 --device cpu
	cp build/demo_train/ddpm_tiny/ddpm_ema.pt echogains/ddpm/weights/ddpm_tiny_phantom.pt

clean:
	rm -rf $(VENV) demo_output
