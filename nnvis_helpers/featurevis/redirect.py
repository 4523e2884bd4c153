"""Redirected ReLU6 gradients: a way out of dead starts in feature visualization (Lucid's idea, for ReLU6).

An optimization that starts from a nearly grey image can find the unit it maximizes behind a
clamp: every ReLU6 on the way at 0 (or at 6), so the gradient is exactly zero and the image never
moves. Lucid's ``redirected_relu_grad`` lets the gradient through such a clamp, but only for an
image whose ordinary gradient there is zero everywhere, and only in the direction that moves the
unit back into the range where it is alive. Once the image is alive the true gradient takes over
again. The forward pass is unchanged, so the objective is measured as it is.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["redirected_relu6"]


class _RedirectedClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        ordinary = grad * ((x > 0) & (x < 6))
        stuck = ordinary.flatten(1).abs().amax(dim=1) == 0   # per image: no ordinary gradient at this layer at all
        if not stuck.any():
            return ordinary                                  # the usual case once the images are alive
        # A descent step moves x by -grad: below 0 only a negative grad brings the unit back, above 6 a positive one.
        back_into_range = ~(((x <= 0) & (grad > 0)) | ((x >= 6) & (grad < 0)))
        return torch.where(stuck.view(-1, *([1] * (x.dim() - 1))), grad * back_into_range, ordinary)


class _RedirectedReLU6(nn.ReLU6):
    def forward(self, x):
        return _RedirectedClamp.apply(x)


@contextmanager
def redirected_relu6(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, the ReLU6 modules of ``model`` redirect the gradient of images stuck behind the clamp.

    Use it only to *optimize* an image: the forward pass is the same, the backward pass is not the
    true gradient for stuck images. In-place ReLU6 modules run out of place inside (the custom
    backward needs the input). On leaving, whatever happened, every module is as it was; nothing is
    copied, so it costs nothing on a model without ReLU6.

    >>> with redirected_relu6(model):
    ...     icons = render_icons(model, "blocks.4.0.bn2.drop", directions)
    """
    swapped = [(module, module.inplace) for module in model.modules() if type(module) is nn.ReLU6]
    try:
        for module, _ in swapped:
            module.__class__ = _RedirectedReLU6
            module.inplace = False
        yield model
    finally:
        for module, inplace in swapped:
            module.__class__ = nn.ReLU6
            module.inplace = inplace
