"""Is a channel about one thing? Its top examples, grouped by what the whole layer sees there.

A channel is *polysemantic* when unrelated inputs excite it (Olah et al. 2017, "Feature
Visualization", the diversity section; Olah et al. 2020, "Zoom In"). Dataset examples can show
it without any hand-picking: take the layer's whole activation vector at each top example's
strongest unit, split those vectors into two groups (k-means on the unit sphere), and score
how far apart the groups are. A high score means the channel fires for two different kinds of
input; the notebook then looks at both groups and at diverse feature visualizations.

* :func:`unit_vectors` — the layer's activation vector (C,) at given units of given images.
* :func:`example_groups` — the top examples of every channel split in two, with a separation score.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_images
from ..layers import get_layer, preserve_model_state
from .cards import read_images
from .crops import _positions, layer_maps
from .topk import TopExamples

__all__ = ["unit_vectors", "ExampleGroups", "example_groups"]


def unit_vectors(model: nn.Module, layer: str, images: torch.Tensor, positions, batch_size: int = 32) -> torch.Tensor:
    """The activation vector of ``layer`` at unit ``positions[n]`` of image n: (N, C), on the CPU.

    >>> vectors = unit_vectors(model, "blocks.4", images, [(3, 4)] * len(images))
    """
    get_layer(model, layer)  # an unknown name lists the closest ones, before any work
    check_images(images, "images")
    positions = torch.as_tensor(positions).long().reshape(-1, 2)
    if len(positions) == 1:
        positions = positions.expand(images.shape[0], 2)
    if len(positions) != images.shape[0]:
        raise ValueError(f"give one (row, column) per image, or one for all: {images.shape[0]} images but {len(positions)} positions.")
    device = next((p.device for p in model.parameters()), images.device)
    vectors = []
    with preserve_model_state(model), torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device)
            maps = layer_maps(model, layer, chunk)
            where = _positions(positions[start : start + batch_size], chunk.shape[0], tuple(maps.shape[2:])).to(maps.device)
            vectors.append(maps[torch.arange(chunk.shape[0], device=maps.device), :, where[:, 0], where[:, 1]].float().cpu())
    return torch.cat(vectors)


@dataclass
class ExampleGroups:
    """The top examples of each channel split in two groups (see :func:`example_groups`).

    ``channels`` (K,); ``score`` (K,): mean cosine similarity of examples in the same group minus
    that of examples in different groups (0: one blob, near 1: two unrelated kinds of input);
    ``labels`` (K, n) the group (0 or 1) of each of the first n top examples.
    """

    layer: str
    channels: torch.Tensor
    score: torch.Tensor
    labels: torch.Tensor

    def ranking(self) -> list[tuple[int, float]]:
        """(channel, score), the most clearly split channels first."""
        order = self.score.argsort(descending=True)
        return [(int(self.channels[i]), float(self.score[i])) for i in order]

    def groups(self, channel: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ranks (positions in the top-k list) of the examples in group 0 and in group 1."""
        row = int((self.channels == int(channel)).nonzero()[0, 0])
        labels = self.labels[row]
        return (labels == 0).nonzero().squeeze(1), (labels == 1).nonzero().squeeze(1)


def _two_groups(unit: torch.Tensor, seed: int, rounds: int = 20) -> tuple[torch.Tensor, float]:
    """Spherical 2-means of unit vectors (n, C): labels (n,) and the separation score."""
    generator = torch.Generator().manual_seed(seed)
    similarity = unit @ unit.t()
    # start from the two least similar examples: the split k-means would find from a good start
    first = int(torch.randint(len(unit), (1,), generator=generator))
    second = int(similarity[first].argmin())
    first = int(similarity[second].argmin())
    centres = unit[[first, second]]
    labels = torch.zeros(len(unit), dtype=torch.long)
    for _ in range(rounds):
        labels = (unit @ centres.t()).argmax(1)
        if labels.min() == labels.max():
            return labels, 0.0
        centres = torch.stack([unit[labels == g].mean(0) for g in (0, 1)])
        centres = centres / centres.norm(dim=1, keepdim=True).clamp_min(1e-12)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(unit), dtype=torch.bool)
    within = similarity[same & off_diagonal].mean()
    between = similarity[~same].mean()
    smaller = min(int((labels == 0).sum()), int((labels == 1).sum()))
    if smaller < max(2, len(unit) // 4):  # one stray example is not a second meaning
        return labels, 0.0
    return labels, float(within - between)


def example_groups(model: nn.Module, top: TopExamples, data, count: int = 12, seed: int = 0,
                   batch_size: int = 32) -> ExampleGroups:
    """Split the first ``count`` top examples (by max) of every channel of ``top`` in two groups.

    Each example is the layer's whole activation vector at that image's strongest unit of the
    channel, normalized; the groups are spherical 2-means. The score: mean cosine similarity within
    groups minus between groups, 0 when the smaller group holds fewer than a quarter of the
    examples. One pass over the images that appear in any top list.

    >>> groups = example_groups(model, top, data)
    >>> groups.ranking()[:3]   # the channels whose top examples split most clearly
    """
    count = min(int(count), top.k)
    if count < 4:
        raise ValueError(f"count={count}: splitting needs at least 4 top examples per channel (collect top_examples with k >= 4).")
    index = top.max_index[:, :count]
    positions = top.max_positions[:, :count]
    unique, inverse = torch.unique(index.reshape(-1), return_inverse=True)
    images = read_images(data, unique)
    # every (image, position) pair once; most channels share images
    pairs = torch.cat([inverse[:, None], positions.reshape(-1, 2)], 1)
    distinct, pair_of = torch.unique(pairs, dim=0, return_inverse=True)
    vectors = unit_vectors(model, top.layer, images[distinct[:, 0]], distinct[:, 1:], batch_size=batch_size)
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    vectors = vectors[pair_of].reshape(len(top.channels), count, -1)
    scores, labels = [], []
    for row in range(len(top.channels)):
        found, score = _two_groups(vectors[row], seed)
        labels.append(found)
        scores.append(score)
    return ExampleGroups(top.layer, top.channels.clone(), torch.tensor(scores), torch.stack(labels))
