"""Low-rank factorization of Linear and Conv2d layers by truncated SVD.

A Linear weight W (out x in) becomes two layers, ``in -> r -> out``, with W ~= U_r S_r V_r^T
(Eckart-Young: the best rank-r approximation). A k x k convolution becomes a k x k convolution
with r filters followed by a 1 x 1 convolution back to the original filters (the spatial/channel
decomposition of Zhang et al. 2016, "Accelerating Very Deep Convolutional Networks", without
their non-linear refinement). Fine-tune afterwards; measure the speed on the runtime, since fewer
parameters do not always mean faster kernels.
"""

from __future__ import annotations

from slimkit.lowrank.svd import FactorizeConfig, choose_rank, factorize, factorize_layer

__all__ = ["FactorizeConfig", "choose_rank", "factorize", "factorize_layer"]
