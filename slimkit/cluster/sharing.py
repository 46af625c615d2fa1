"""The shared-weight parametrization: weight = codebook[assignment], zero where pruned."""

from __future__ import annotations

import torch
from torch import nn


class SharedWeight(nn.Module):
    """Parametrization that rebuilds a weight from a trainable codebook.

    ``assignment`` holds each weight's centroid index, or -1 for a pruned (zero) weight.
    Indexing the codebook makes autograd sum the gradients of all weights in a cluster into their
    centroid, which is exactly the paper's centroid update (Han et al. 2016, eq. 3).

    Example:
        >>> share = SharedWeight(torch.tensor([-1.0, 1.0]), torch.tensor([[0, -1], [1, 1]]))
        >>> share(torch.empty(2, 2))
        tensor([[-1.,  0.],
                [ 1.,  1.]], grad_fn=<WhereBackward0>)
    """

    def __init__(self, centroids: torch.Tensor, assignment: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.clone().float())
        self.register_buffer("assignment", assignment.clone().long())

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        del original  # the weight is the codebook lookup; the original tensor is not used
        kept = self.assignment >= 0
        values = self.centroids[self.assignment.clamp(min=0)]
        return torch.where(kept, values, torch.zeros((), dtype=values.dtype))
