"""Redirected ReLU6 gradients: a way out of dead starts in feature visualization (Lucid's idea, for ReLU6).

An optimization that starts from a nearly grey image can find the unit it maximizes behind a
clamp: every ReLU6 on the way at 0 (or at 6), so the gradient is exactly zero and the image never
moves. Lucid's ``redirected_relu_grad`` lets the gradient through such a clamp, but only for an
image whose ordinary gradient there is zero everywhere, and only in the direction that moves the
unit back into the range where it is alive. Once the image is alive the true gradient takes over
again. The forward pass is unchanged, so the objective is measured as it is.
"""
from __future__ import annotations

import copy

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
        # A descent step moves x by -grad: below 0 only a negative grad brings the unit back, above 6 a positive one.
        back_into_range = ~(((x <= 0) & (grad > 0)) | ((x >= 6) & (grad < 0)))
        redirected = grad * back_into_range
        stuck = ordinary.flatten(1).norm(dim=1) == 0      # per image: no ordinary gradient at this layer at all
        return torch.where(stuck.view(-1, *([1] * (x.dim() - 1))), redirected, ordinary)


class _RedirectedReLU6(nn.ReLU6):
    def forward(self, x):
        return _RedirectedClamp.apply(x)


def redirected_relu6(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ReLU6 modules redirect the gradient of images stuck behind the clamp.

    Use it only to *optimize* an image; the copy computes the same outputs as ``model``. In-place
    ReLU6 modules become out-of-place ones (the custom backward needs the input).

    >>> icons = render_icons(redirected_relu6(model), "blocks.4.0.bn2.drop", directions)
    """
    redirected = copy.deepcopy(model)
    for module in redirected.modules():
        if type(module) is nn.ReLU6:
            module.__class__ = _RedirectedReLU6
            module.inplace = False
    return redirected
