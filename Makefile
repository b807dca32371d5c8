# Two commands for users: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean demo-weights demo-weights-nnunet

# The committed demo weights were made by this target (CPU, one thread, about an hour each on 2 cores).
# Echo-DND: the legacy loss settings they were trained with are pinned (Adam, i.e. weight decay 0, and the
# variational-bound KL form); the bundle's defaults are now AdamW decay 1e-2 and the paper's prior-form KL.
DEMO_DATA := build/demo_train/Dataset601_PhantomLV

# constraints.txt: the tested versions of every direct dependency (pyproject.toml keeps the ranges).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -c constraints.txt -e ".[test,lint]"
	touch $(STAMP)

install: $(STAMP)

# -n auto: one pytest worker per core (each runs torch with one thread, see tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -q -n auto tests

# Lint (ruff), format check (ruff format) and types (mypy on the modules listed in pyproject.toml [tool.mypy] files).
# CI (.ci/run) runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

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

# The demo's nnU-Net (nnUNetTrainerEchoDemo: a small U-Net, 16 epochs x 25 iterations, final checkpoint without
# optimizer state, weights in half precision), trained on the same phantom data; committed under nnunet_ext/demo_model.
NNUNET_DEMO_ENV := nnUNet_raw=$(CURDIR)/build/demo_train nnUNet_preprocessed=$(CURDIR)/build/demo_train/nnUNet_preprocessed \
	nnUNet_results=$(CURDIR)/build/demo_train/nnUNet_results nnUNet_extTrainer=$(CURDIR)/nnunet_ext/trainers \
	nnUNet_def_n_proc=1 nnUNet_n_proc_DA=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ECHOGAINS_NNUNET_SEED=0
NNUNET_DEMO_MODEL := Dataset601_PhantomLV/nnUNetTrainerEchoDemo__nnUNetPlans__2d

demo-weights-nnunet: $(STAMP)
	$(PY) -m echogains make-phantom $(DEMO_DATA) --layout nnunet --n_patients 60 --seed 1000 --labels lv,myo --overwrite
	$(NNUNET_DEMO_ENV) $(VENV)/bin/nnUNetv2_plan_and_preprocess -d 601 -c 2d -np 1 -npfp 1 --verify_dataset_integrity
	$(NNUNET_DEMO_ENV) $(VENV)/bin/nnUNetv2_train 601 2d 0 -tr nnUNetTrainerEchoDemo -device cpu
	mkdir -p nnunet_ext/demo_model/$(NNUNET_DEMO_MODEL)/fold_0
	cp build/demo_train/nnUNet_results/$(NNUNET_DEMO_MODEL)/plans.json build/demo_train/nnUNet_results/$(NNUNET_DEMO_MODEL)/dataset.json \
		nnunet_ext/demo_model/$(NNUNET_DEMO_MODEL)/
	cp build/demo_train/nnUNet_results/$(NNUNET_DEMO_MODEL)/fold_0/checkpoint_final.pth \
		build/demo_train/nnUNet_results/$(NNUNET_DEMO_MODEL)/fold_0/validation/summary.json nnunet_ext/demo_model/$(NNUNET_DEMO_MODEL)/fold_0/

clean:
	rm -rf $(VENV) demo_output
