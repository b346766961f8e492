"""Training, evaluation, metrics and classical baselines (issue 3).

- :mod:`.data` finds specimen folders, checks them, splits by specimen and picks training slices.
- :mod:`.augment` CT-style batch augmentation; :mod:`.losses` Dice + cross-entropy.
- :mod:`.train` ``TrainOptions`` and ``train()`` (single process or DDP under ``torchrun``).
- :mod:`.metrics` the paper's slice-wise mean Dice/IoU and volumetric Dice/IoU.
- :mod:`.baselines` global Otsu and seeded region growing; :mod:`.evaluate` reports and figures.
"""
