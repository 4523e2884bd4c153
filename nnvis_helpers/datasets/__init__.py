"""Images in quantity, offline and in Colab, and the activations a layer gives on them.

Later chapters look at thousands of activations at once: the activation atlas (Carter et al.
2019) lays out one vector per image position, dataset examples show the pictures a channel
likes most (Olah et al. 2017). This subpackage gives them the pictures and the vectors, in
three parts: :mod:`.photos` (crops of the offline photos), :mod:`.folders` (pictures on disk
and the switch :func:`dataset`) and :mod:`.activations` (:func:`collect_activations`).

* :class:`OfflinePhotos` — seeded random crops, mirror images and colour jitter of the photos
  that ship inside scikit-image, scikit-learn and matplotlib: thousands of items with no download.
* :class:`ImageFolderImages` — any folder of pictures (class subfolders, as torchvision's
  ``ImageFolder`` reads them, or one flat folder).
* :class:`ImagenetteImages` — Imagenette (Howard 2019), ten easy ImageNet classes, through torchvision.
* :func:`dataset` — one of those by name; ``"auto"`` picks Imagenette when it is here or can be
  downloaded, else the offline photos, and says which in one line. ``NNVIS_DATASET`` overrides.
* :func:`collect_activations` — streams images through a model and keeps a few activation
  vectors per image (an :class:`ActivationSet`), never the images themselves.

Every item is an (image, label) pair: a float tensor (3, size, size) in [0, 1] and an int.

>>> from nnvis_helpers.datasets import collect_activations, dataset
>>> acts = collect_activations(model, "blocks.5", dataset("offline", length=512), positions_per_image=4)
"""
from .activations import ActivationSet, collect_activations
from .folders import ImageFolderImages, ImagenetteImages, dataset, default_data_root
from .photos import OfflinePhotos

__all__ = [
    "OfflinePhotos",
    "ImageFolderImages",
    "ImagenetteImages",
    "dataset",
    "default_data_root",
    "ActivationSet",
    "collect_activations",
]
