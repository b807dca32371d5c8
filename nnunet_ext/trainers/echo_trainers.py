"""nnU-Net trainer variants for echocardiography (EchoGAINS paper, Table 2), each overriding one thing.

- ``nnUNetTrainerEchoSplits``: folds from the raw dataset's patient-grouped ``splits_final.json`` (or grouped by
  patient from ``cases.json``), validation on original cases only (overrides ``do_split``). They read the raw
  dataset from ``$nnUNet_raw`` and refuse to train without it (nnU-Net's random split would leak augmented copies).
- ``nnUNetTrainerEcho``: the paper's setting, 500 epochs, on those folds (overrides ``num_epochs``).
- ``nnUNetTrainerEchoSmoke``: 1 epoch of 2 iterations and 1 validation iteration, for CPU tests;
  ``nnUNetTrainerEchoSmokeNoVal`` the same without the final validation (tests that compare weights only).
- ``nnUNetTrainerEchoDemo``: the demo's committed model (``make demo-weights-nnunet``): a small network, 16 epochs of
  25 iterations, a final checkpoint without optimizer state (overrides the architecture, schedule and final save).

nnU-Net imports this module by file from ``nnUNet_extTrainer``; imports below are therefore absolute.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_ext.splits import echo_split, load_raw_splits, raw_dataset_folder

if TYPE_CHECKING:
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

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

    #: The schedule a subclass sets (``None``: nnU-Net's own, 1000 epochs of 250 + 50 iterations).
    NUM_EPOCHS: int | None = None
    NUM_ITERATIONS_PER_EPOCH: int | None = None
    NUM_VAL_ITERATIONS_PER_EPOCH: int | None = None

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for name in ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch"):
            value = getattr(self, name.upper())
            if value is not None:
                setattr(self, name, value)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if self.device.type == "cpu" and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        self.echo_seed = seed_from_environment()

    def do_split(self) -> tuple[list[str], list[str]]:
        if self.fold == "all":
            return super().do_split()
        raw = raw_dataset_folder(self.plans_manager.dataset_name)  # no silent fallback to nnU-Net's random split
        if self.dataset_class is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        identifiers = list(self.dataset_class.get_identifiers(self.preprocessed_dataset_folder))
        splits, records = load_raw_splits(raw, identifiers)
        train, val = echo_split(splits, self.fold, records, identifiers)
        self.print_to_log_file(
            f"Echo split from {raw}: fold {self.fold}, {len(train)} training and {len(val)} "
            "original validation cases (grouped by patient)"
        )
        return train, val


class nnUNetTrainerEcho(nnUNetTrainerEchoSplits):
    """EchoGAINS paper setting (Table 2): nnU-Net defaults, 500 epochs, patient-grouped echo folds."""

    NUM_EPOCHS = 500


class nnUNetTrainerEchoSmoke(nnUNetTrainerEchoSplits):
    """One epoch of two iterations: checks the whole nnU-Net path on CPU in seconds. Not for real training."""

    NUM_EPOCHS = 1
    NUM_ITERATIONS_PER_EPOCH = 2
    NUM_VAL_ITERATIONS_PER_EPOCH = 1


class nnUNetTrainerEchoSmokeNoVal(nnUNetTrainerEchoSmoke):
    """The smoke schedule without nnU-Net's final validation (for tests that only compare trained weights).

    ``nnUNetv2_train`` always ends with ``perform_actual_validation``, which spawns an export worker process and
    predicts every validation case: measured at 27 of the 30 s of a 4-patient smoke training on a loaded 2-core
    machine (nnU-Net's log timestamps). This trainer writes ``checkpoint_final.pth`` and logs that the validation
    was skipped; no ``validation/`` folder is written.
    """

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("final validation skipped (nnUNetTrainerEchoSmokeNoVal)")


class nnUNetTrainerEchoQuick(nnUNetTrainerEchoSplits):
    """A few minutes of CPU training (15 epochs of 25 iterations) for the ``--quick`` experiments on the phantom.

    Enough to rank augmentation arms on small 64 px phantom datasets; the papers' numbers need ``nnUNetTrainerEcho``.
    """

    NUM_EPOCHS = 15
    NUM_ITERATIONS_PER_EPOCH = 25
    NUM_VAL_ITERATIONS_PER_EPOCH = 5


class nnUNetTrainerEchoDemo(nnUNetTrainerEchoSplits):
    """The demo's committed nnU-Net (``make demo-weights``): a small network that CPU training can afford.

    Overrides the architecture (the plans' U-Net with at most ``MAX_FEATURES`` features per stage, starting at
    ``BASE_FEATURES``: a few MB instead of nnU-Net's ~80 MB), the schedule (``num_epochs`` x 25 iterations) and the
    final checkpoint, which keeps only what ``nnUNetPredictor`` reads (weights in half precision, trainer name, init
    arguments, mirroring axes; no optimizer state), so that it can be committed. Inference rebuilds the same network
    through :meth:`build_network_architecture`, so predicting needs ``nnUNet_extTrainer`` set
    (``echogains nnunet-env``).
    """

    BASE_FEATURES = 16
    MAX_FEATURES = 96

    NUM_EPOCHS = 16
    NUM_ITERATIONS_PER_EPOCH = 25
    NUM_VAL_ITERATIONS_PER_EPOCH = 5

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        kwargs = dict(configuration_manager.network_arch_init_kwargs)
        n_stages = int(kwargs["n_stages"])
        base, top = nnUNetTrainerEchoDemo.BASE_FEATURES, nnUNetTrainerEchoDemo.MAX_FEATURES
        kwargs["features_per_stage"] = [min(base * 2**i, top) for i in range(n_stages)]
        return get_network_from_plans(
            configuration_manager.network_arch_class_name,
            kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            num_input_channels,
            num_output_channels,
            allow_init=True,
            deep_supervision=enable_deep_supervision,
        )

    def save_checkpoint(self, filename: str) -> None:
        if not str(filename).endswith("checkpoint_final.pth"):
            return super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing:
            return None
        module = self.network.module if self.is_ddp else self.network
        module = getattr(module, "_orig_mod", module)
        weights = {k: (v.half() if v.is_floating_point() else v) for k, v in module.state_dict().items()}
        torch.save(
            {
                "network_weights": weights,
                "init_args": self.my_init_kwargs,
                "trainer_name": self.__class__.__name__,
                "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
                "current_epoch": self.current_epoch + 1,
            },
            filename,
        )
        return None
