"""echogains: echocardiography left-ventricle segmentation toolkit.

Data (phantom, CAMUS, EchoNet-Dynamic) as nnU-Net raw datasets, ultrasound sector geometry,
generative augmentation (EchoGAINS), and evaluation in clinical terms (Dice, HD in mm, Simpson EF).
"""

from __future__ import annotations

__version__ = "0.1.0"
