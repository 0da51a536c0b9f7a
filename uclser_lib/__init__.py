"""uclser_lib: the helper library of the UCLSER course.

One module per stage of "Unsupervised Contrastive Learning of Sound Event Representations" (Fonseca et al.,
ICASSP 2021); data flows down this list, and a module imports only modules above it, at the top of the module or
inside a function (``tests/test_layout.py`` reads this list and checks it; the command line may import anything).
The method is explained in ``docs/method.md``.

Infrastructure
- ``runtime``      device, seeds, smoke mode, paths, atomic writes, sha256, torch/torchaudio check (decided here only)
- ``config``       YAML configs and ``--key value`` overrides for the command line (``python -m uclser_lib``)

Files -> features
- ``features``     WAV -> log-mel (frames x 96), torch (batched) and librosa (readable) paths, and back (mel inversion)
- ``data``         FSDnoisy18k's layout (classes, CSVs), metadata, packed clips, HDF5 feature sets, extraction, splits
- ``store``        the feature store: a training set written once as a memory-mapped float16 array, read per batch
- ``coursedata``   the procedural course datasets, in FSDnoisy18k's layout and (multi-label) in FSD50K's (``dsp``,
  ``recipes``, ``plan``, ``writer``, ``multilabel``)
- ``folders``      ESC-50 and your own folders as datasets (their folds and splits, summary)
- ``fsd50k``       FSD50K's layout (multi-label, its official splits) and AudioSet's CSV layout
- ``datasets``     ``prepare()``: the course datasets, FSDnoisy18k, FSD50K, ESC-50 or a folder, generated and extracted
  as needed, each a ``PreparedDataset``

Features -> views
- ``sampling``     random draws on any device from a ``torch.Generator``
- ``mixback``      mix-back (energy-preserving background mixing)
- ``augment``      the augmentations as batched ``nn.Module`` s, and ``AugmentConfig`` (the view recipe)
- ``views``        patches of packed clips, ``ViewBuilder`` (the two views of a batch), ``GraphedViews``

Views -> encoder -> pre-training
- ``models``       encoders (ResNet-18, VGG-like, CRNN), projection head
- ``losses``       NT-Xent (single process and DistributedDataParallel)
- ``checkpoints``  run checkpoints, loaded safely
- ``metrics``      balanced accuracy, clip-level predictions, the kNN monitor's vote; multi-label mAP, d', lwlrap
- ``embed``        an encoder over every evaluation patch of a set, clip embeddings, the kNN monitor
- ``train``        contrastive pre-training: the loop, checkpoints, resume

Evaluation
- ``released``     the authors' published encoders, their sha256 and the normalisation they expect
- ``download``     FSDnoisy18k, FSD50K, ESC-50 and the released encoders: resumable, checksum-verified, unpacked
  atomically
- ``pretrained``   the course's own encoders in ``pretrained/`` (export, sha256-checked loading), any encoder by name
- ``baselines``    fair random features (BatchNorm statistics re-estimated), handcrafted band statistics
- ``downstream``   linear evaluation and fine-tuning
- ``results``      results files: summaries over seeds, merging, tables
- ``experiments``  pre-trained vs random init and the baselines over seeds, 5-fold cross-validation, label
  efficiency, label noise
- ``analysis``     embedding maps (PCA, t-SNE), nearest clips, retrieval precision, gaps between views' noise floors
- ``hear``         a HEAR-style embedding API (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``)

Showing
- ``plots``, ``widgets`` figures and the interactive augmentation panel of notebook 02
- ``exercises``  checks of the notebooks' "implement it" exercises (a stub reported, a wrong answer named)
- ``cli``          the command line, ``python -m uclser_lib`` (``__main__`` runs it)
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
