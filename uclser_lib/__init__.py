"""uclser_lib: the helper library of the UCLSER course.

One module per stage of "Unsupervised Contrastive Learning of Sound Event
Representations" (Fonseca et al., ICASSP 2021):

- ``runtime``   device choice, seeds, smoke mode, paths (the one place that decides them)
- ``coursedata`` the procedural course dataset in FSDnoisy18k's layout
- ``features``  WAV -> log-mel (frames x 96), torch and librosa paths
- ``data``      FSDnoisy18k/course metadata, splits, HDF5 feature sets, packed clips
- ``augment``   patch views, mix-back and augmentations as batched tensor ops
- ``models``    encoders (ResNet-18, VGG-like, CRNN) and the projection head
- ``losses``    NT-Xent
- ``evaluate``  kNN monitor, clip-level prediction, balanced accuracy
- ``plots``     figures of the course
"""

__version__ = "0.1.0"
