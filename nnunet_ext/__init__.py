"""nnU-Net v2 plugin: trainer variants for echocardiography datasets written by ``echogains``.

nnU-Net finds the trainers through its ``nnUNet_extTrainer`` environment variable (nnU-Net >= 2.8). Point it at
the ``nnunet_ext/trainers`` folder of this package — ``echogains nnunet-env`` prints the export line — and use
``nnUNetv2_train DATASET 2d FOLD -tr nnUNetTrainerEcho``. Nothing is copied into nnU-Net's installed package.
"""

from __future__ import annotations

from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parent / "trainers"

__all__ = ["TRAINER_DIR"]
