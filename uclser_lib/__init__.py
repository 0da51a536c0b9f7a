"""uclser_lib: the helper library of the UCLSER course.

One module per stage of "Unsupervised Contrastive Learning of Sound Event Representations" (Fonseca et al.,
ICASSP 2021):

- ``runtime``      device choice, seeds, smoke mode, paths (the one place that decides them)
- ``coursedata``   the procedural course dataset in FSDnoisy18k's layout
- ``features``     WAV -> log-mel (frames x 96), torch (batched) and librosa (readable) paths
- ``data``         FSDnoisy18k/course metadata, splits, HDF5 feature sets, packed clips, ``prepare()``
- ``views``        patch sampling on packed clips (training, two views, evaluation patches)
- ``augment``      mix-back and the augmentations as batched tensor ops; ``ViewBuilder``, ``GraphedViews``
- ``augment_reference`` the per-example chain, for tests and the benchmark baseline only
- ``models``       encoders (ResNet-18, VGG-like, CRNN), projection head, the authors' published checkpoints
- ``losses``       NT-Xent (single process and DistributedDataParallel)
- ``train``        contrastive pre-training: loop, checkpoints, resume, kNN monitor
- ``evaluate``     kNN monitor, clip-level prediction, balanced accuracy
- ``downstream``   linear evaluation and fine-tuning
- ``experiments``  pre-trained vs random init over seeds, label efficiency
- ``pretrained``   the course's own encoders in ``pretrained/`` (export, sha256-checked loading)
- ``analysis``     embeddings maps (PCA, t-SNE), retrieval, result tables
- ``config``       YAML configs and ``--key value`` overrides for the command line (``python -m uclser_lib``)
- ``plots``, ``widgets`` figures and the interactive augmentation panel
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
