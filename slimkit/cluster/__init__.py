"""Weight sharing by k-means clustering (Han et al. 2016, "Deep Compression", section 3).

Each layer's non-zero weights are clustered into ``2**bits`` shared values with *linear*
initialisation (centroids spread evenly between the smallest and largest weight, which the paper
found keeps the large, important weights best). The layer then stores only a small codebook and a
``bits``-bit index per weight. Fine-tuning updates the shared values: the gradient of a centroid
is the sum of the gradients of the weights that share it, and pruned weights stay exactly zero.
"""

from __future__ import annotations

from slimkit.cluster.kmeans import ClusterConfig, cluster, finalize, shared_values
from slimkit.cluster.sharing import SharedWeight

__all__ = ["ClusterConfig", "SharedWeight", "cluster", "finalize", "shared_values"]
