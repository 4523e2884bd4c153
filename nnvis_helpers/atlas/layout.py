"""Laying activation vectors out in 2-D: UMAP as in the paper, t-SNE or PCA without umap-learn.

:func:`layout` returns a :class:`Layout`: the 2-D position of every vector, scaled into the
unit square, and ``transform`` to place new vectors (a photo, its adversarial versions) on the
same map. UMAP has its own ``transform``; t-SNE has none, so new vectors are placed at the
mean position of their nearest neighbours (by cosine) among the laid-out vectors.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Layout", "layout", "whitening_matrix", "LAYOUT_METHODS"]

LAYOUT_METHODS = ("auto", "umap", "tsne", "pca")


def _as_matrix(vectors, name: str = "vectors") -> np.ndarray:
    if hasattr(vectors, "vectors") and not isinstance(vectors, (torch.Tensor, np.ndarray)):
        vectors = vectors.vectors  # an ActivationSet
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a matrix (M, C): one activation vector per row, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; check how the activations were collected.")
    return array


def whitening_matrix(vectors, epsilon: float = 1e-3) -> torch.Tensor:
    """The (regularized) inverse of the vectors' uncentred correlation matrix S = V^T V / M.

    The activation atlas renders ``v @ S^-1`` instead of ``v``: directions that every image
    shares (large in S) are turned down, the ones that set a cell apart turned up. ``epsilon``
    (relative to the largest eigenvalue) keeps near-empty directions from exploding.
    Returns a (C, C) float32 tensor.

    >>> icons_directions = cell_means @ whitening_matrix(activations.vectors)
    """
    matrix = torch.from_numpy(_as_matrix(vectors)).double()
    correlation = matrix.T @ matrix / max(1, matrix.shape[0])
    eigenvalues, eigenvectors = torch.linalg.eigh(correlation)
    floor = eigenvalues.max().clamp(min=1e-12) * epsilon
    inverse = (eigenvectors / eigenvalues.clamp(min=floor)) @ eigenvectors.T
    return inverse.float()


@dataclass
class Layout:
    """2-D positions (M, 2) in the unit square of M activation vectors, and a way to place new ones.

    ``method`` says which algorithm made it (``"umap"``, ``"tsne"`` or ``"pca"``).

    >>> places = atlas_layout.transform(new_vectors)   # (K, 2) on the same map
    """

    coords: torch.Tensor
    method: str
    whitened: bool = False
    _model: object = field(default=None, repr=False)
    _train: np.ndarray | None = field(default=None, repr=False)
    _low: np.ndarray | None = field(default=None, repr=False)
    _high: np.ndarray | None = field(default=None, repr=False)
    _whitening: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.coords)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((raw - self._low) / (self._high - self._low), 0.0, 1.0)

    def transform(self, vectors, neighbours: int = 10) -> torch.Tensor:
        """Positions (K, 2) of new activation vectors (K, C) of the same layer on this map.

        UMAP and PCA use their own ``transform``; t-SNE has none, so each vector goes to the
        mean position of its ``neighbours`` nearest laid-out vectors (cosine similarity).
        """
        array = _as_matrix(vectors)
        if array.shape[1] != self._train.shape[1]:
            raise ValueError(
                f"these vectors have {array.shape[1]} entries but the layout was made from vectors of "
                f"{self._train.shape[1]}: use activations of the same layer."
            )
        if self._whitening is not None:
            array = array @ self._whitening
        if self.method == "tsne":
            train = self._train / (np.linalg.norm(self._train, axis=1, keepdims=True) + 1e-8)
            query = array / (np.linalg.norm(array, axis=1, keepdims=True) + 1e-8)
            nearest = np.argsort(-(query @ train.T), axis=1)[:, :neighbours]
            return self.coords[torch.from_numpy(nearest)].mean(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba and umap's chatter, not the learner's business
            raw = self._model.transform(array)
        return torch.from_numpy(self._scale(np.asarray(raw, dtype=np.float64))).float()


def _resolve_method(method: str, verbose: bool) -> str:
    if method not in LAYOUT_METHODS:
        raise ValueError(f"unknown layout method {method!r}; use one of {', '.join(LAYOUT_METHODS)}.")
    if method in ("auto", "umap"):
        try:
            import umap  # noqa: F401
        except ImportError:
            if method == "umap":
                raise ImportError("umap-learn is not installed: `pip install umap-learn`, or use method='tsne'.") from None
            if verbose:
                print("layout('auto'): umap-learn is not installed, using scikit-learn's t-SNE instead "
                      "(`pip install umap-learn` for the paper's layout).")
            return "tsne"
        return "umap"
    return method


def layout(
    vectors,
    method: str = "auto",
    n_neighbors: int = 20,
    min_dist: float = 0.01,
    metric: str = "cosine",
    whiten: bool = False,
    margin_percentile: float = 1.0,
    seed: int = 0,
    verbose: bool = True,
) -> Layout:
    """Lay M activation vectors (M, C) out in 2-D, scaled into the unit square.

    ``method``: ``"auto"`` (UMAP when umap-learn is installed, else t-SNE), ``"umap"``,
    ``"tsne"`` or ``"pca"``. UMAP's settings default to the paper's (``n_neighbors=20``,
    ``min_dist=0.01``, cosine metric). ``whiten=True`` lays out ``v @ S^-1`` (see
    :func:`whitening_matrix`). Positions are scaled so that the ``margin_percentile`` and
    ``100 - margin_percentile`` percentiles span [0, 1]; the few outliers beyond are clipped to
    the border, so one stray point cannot squeeze the whole map. Seeded: same seed, same map.

    >>> atlas_layout = layout(activations.vectors)
    >>> atlas_layout.coords.shape
    torch.Size([2000, 2])
    """
    array = _as_matrix(vectors)
    if len(array) < 5:
        raise ValueError(f"a layout needs at least 5 vectors, got {len(array)}; collect activations from more images.")
    if not 0 <= margin_percentile < 50:
        raise ValueError(f"margin_percentile must be in [0, 50), got {margin_percentile!r}")
    method = _resolve_method(method, verbose)
    whitening = whitening_matrix(array).numpy() if whiten else None
    data = array @ whitening if whitening is not None else array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "umap":
            import umap

            model = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(data) - 1), min_dist=min_dist,
                              metric=metric, random_state=seed, verbose=False)
            raw = model.fit_transform(data)
        elif method == "tsne":
            from sklearn.manifold import TSNE

            model = TSNE(n_components=2, metric=metric, init="pca", random_state=seed,
                         perplexity=min(30.0, (len(data) - 1) / 3))
            raw = model.fit_transform(data)
        else:
            from sklearn.decomposition import PCA

            model = PCA(n_components=2, random_state=seed)
            raw = model.fit_transform(data)
    raw = np.asarray(raw, dtype=np.float64)
    low = np.percentile(raw, margin_percentile, axis=0)
    high = np.percentile(raw, 100 - margin_percentile, axis=0)
    high = np.where(high - low > 1e-12, high, low + 1.0)
    result = Layout(coords=torch.zeros(0), method=method, whitened=whiten, _model=model, _train=data,
                    _low=low, _high=high, _whitening=whitening)
    result.coords = torch.from_numpy(result._scale(raw)).float()
    return result
