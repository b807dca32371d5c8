"""nnU-Net trainer variants for echocardiography (EchoGAINS paper, Table 2), each overriding one thing.

- ``nnUNetTrainerEchoSplits``: folds from the raw dataset's patient-grouped ``splits_final.json`` (or grouped by
  patient from ``cases.json``), validation on original cases only (overrides ``do_split``). They read the raw
  dataset from ``$nnUNet_raw`` and refuse to train without it (nnU-Net's random split would leak augmented copies).
- ``nnUNetTrainerEcho``: the paper's setting, 500 epochs, on those folds (overrides ``num_epochs``).
- ``nnUNetTrainerEchoSmoke``: 1 epoch of 2 iterations and 1 validation iteration, for CPU tests and the demo.

nnU-Net imports this module by file from ``nnUNet_extTrainer``; imports below are therefore absolute.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.splits import echo_split, load_raw_splits, raw_dataset_folder


#: Environment variable that seeds an Echo trainer (``echogains.nnunet_runner.NnUNet(seed=...)`` sets it).
SEED_VARIABLE = "ECHOGAINS_NNUNET_SEED"


def seed_from_environment() -> int | None:
    """Seed Python, NumPy and torch from ``ECHOGAINS_NNUNET_SEED`` (when set); returns the seed or ``None``.

    nnU-Net seeds neither the network initialisation nor the data loading, and its augmentation workers
    (``NonDetMultiThreadedAugmenter(seeds=None)``) draw their own random state. A seeded trainer therefore also sets
    ``nnUNet_n_proc_DA=0``: augmentation then runs in the training process from the seeded global state, so that two
    runs with the same seed and data train the same network on CPU (slower on a many-core machine; on GPU cuDNN's
    autotuning may still differ). This is what lets the experiments' arms differ only by their data.
    """
    text = os.environ.get(SEED_VARIABLE, "").strip()
    if not text:
        return None
    if not text.lstrip("-").isdigit():
        raise ValueError(f"{SEED_VARIABLE}={text!r}: expected an integer seed")
    seed = int(text)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["nnUNet_n_proc_DA"] = "0"
    return seed


class nnUNetTrainerEchoSplits(nnUNetTrainer):
    """Patient-grouped folds from the raw dataset; augmented copies never validated nor leaked.

    On CPU, ``nnUNetv2_train`` sets torch to one thread per core whatever ``OMP_NUM_THREADS`` says; on a shared
    machine that oversubscribes the cores (several times slower). The trainers honour ``OMP_NUM_THREADS`` when set.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if self.device.type == "cpu" and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        self.echo_seed = seed_from_environment()

    def do_split(self):
        if self.fold == "all":
            return super().do_split()
        raw = raw_dataset_folder(self.plans_manager.dataset_name)  # no silent fallback to nnU-Net's random split
        if self.dataset_class is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        identifiers = list(self.dataset_class.get_identifiers(self.preprocessed_dataset_folder))
        splits, records = load_raw_splits(raw, identifiers)
        train, val = echo_split(splits, self.fold, records, identifiers)
        self.print_to_log_file(f"Echo split from {raw}: fold {self.fold}, {len(train)} training and {len(val)} "
                               "original validation cases (grouped by patient)")
        return train, val


class nnUNetTrainerEcho(nnUNetTrainerEchoSplits):
    """EchoGAINS paper setting (Table 2): nnU-Net defaults, 500 epochs, patient-grouped echo folds."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 500


class nnUNetTrainerEchoSmoke(nnUNetTrainerEchoSplits):
    """One epoch of two iterations: checks the whole nnU-Net path on CPU in seconds. Not for real training."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1


class nnUNetTrainerEchoQuick(nnUNetTrainerEchoSplits):
    """A few minutes of CPU training (15 epochs of 25 iterations) for the ``--quick`` experiments on the phantom.

    Enough to rank augmentation arms on small 64 px phantom datasets; the papers' numbers need ``nnUNetTrainerEcho``.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 15
        self.num_iterations_per_epoch = 25
        self.num_val_iterations_per_epoch = 5
