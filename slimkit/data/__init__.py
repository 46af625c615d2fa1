"""Data sets: one :class:`Dataset` object with train / validation / test splits.

Loaders register themselves by name in :data:`LOADERS`; :func:`load_data` is the entry call.
"""

# Importing each loader module registers its loaders.
from slimkit.data import digits, idx, imagefolder, sst2, tabular  # noqa: F401
from slimkit.data.dataset import LOADERS, Dataset, RawData, Split, load_data

__all__ = ["LOADERS", "Dataset", "RawData", "Split", "load_data"]
