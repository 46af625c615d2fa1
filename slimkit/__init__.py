"""slimkit: make neural networks smaller and faster, and prove it on a real runtime.

The Python API runs the same steps as the command line, one call at a time:

    >>> import slimkit
    >>> data = slimkit.load_data("digits")
    >>> model = slimkit.build_model("mlp", data.input_shape, data.num_classes)
    >>> _ = slimkit.fit(model, data, slimkit.TrainConfig(epochs=1), quiet=True)
    >>> 0.0 <= slimkit.evaluate(model, data.test) <= 1.0
    True

``slimkit.load(path)`` reads back any model file slimkit wrote (checkpoint, ``.slim``, ONNX).
"""

from __future__ import annotations

from typing import Any

from slimkit.lazy import lazy_attribute

__version__ = "0.1.0"

# Public name -> module that defines it (or "module:name"); imported on first use so that
# `import slimkit` stays light.
_API = {
    "SlimkitError": "slimkit.errors",
    "Dataset": "slimkit.data",
    "load_data": "slimkit.data",
    "build_model": "slimkit.models",
    "load_model": "slimkit.models",
    "load": "slimkit.models:load_model",  # slimkit.load("model.slim"), as issue 5 names it
    "save_checkpoint": "slimkit.models",
    "TrainConfig": "slimkit.train",
    "fit": "slimkit.train",
    "evaluate": "slimkit.measure",
    "measure": "slimkit.measure",
    "export": "slimkit.export",
    "Recipe": "slimkit.recipe",
    "run_recipe": "slimkit.recipe",
    "build_report": "slimkit.report",
    "write_report": "slimkit.report",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    return lazy_attribute(_API, __name__, name)
