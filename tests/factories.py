"""A user model factory, as a user would write one, for import-path tests."""

from torch import nn


def tiny(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
