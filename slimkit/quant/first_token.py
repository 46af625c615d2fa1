"""The first token as its own stream, so per-tensor int8 ranges fit the other tokens.

In BERT-style encoders the first token ([CLS]) is an attention sink with "massive activations"
(Sun et al. 2024, "Massive Activations in Large Language Models"): on all-MiniLM-L6-v2 its rows
are 4 to 7 times the typical token's range, so one dynamic range per tensor leaves the other
tokens a few levels each. As PrefixQuant (Chen et al. 2024) isolates such tokens to make
per-tensor quantization work, :class:`FirstTokenSplit` carries the first token in a separate
tensor through every token-wise op (Linears, LayerNorms, GELU); only attention joins the two,
by concatenating their keys and values. Each Linear is then called once per stream and ONNX
Runtime's ``DynamicQuantizeMatMul`` (and the fake quantizer) gives each call its own range.
The float function is unchanged; the [CLS] stream costs a small GEMM per Linear (one row per
sentence).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slimkit.errors import SlimkitError

PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
         "attention.output.dense", "attention.output.LayerNorm", "intermediate",
         "output.dense", "output.LayerNorm")  # fmt: skip


class FirstTokenSplit(nn.Module):
    """A sentence embedder (a BERT-style encoder under ``.model``, mean pooling, L2 norm) that
    runs the first token as its own stream. Module names (``model.encoder.layer.N...``) are the
    embedder's, so smoothing and quantization address the same Linears.

    Example:
        >>> from slimkit.quant.transformer import load_minilm, tokenize
        >>> embedder, tok = load_minilm()  # doctest: +SKIP
        >>> batch = tokenize(tok, ["a film", "a long, dull film"])[0]  # doctest: +SKIP
        >>> bool(torch.allclose(FirstTokenSplit(embedder)(**batch), embedder(**batch),
        ...                     atol=1e-5))  # doctest: +SKIP
        True
    """

    def __init__(self, embedder: nn.Module) -> None:
        super().__init__()
        model = getattr(embedder, "model", None)
        layers = getattr(getattr(model, "encoder", None), "layer", None)
        config = getattr(model, "config", None)
        if layers is None or config is None or not all(_has(layer) for layer in layers):
            raise SlimkitError(
                "the first-token split needs a BERT-style encoder (embeddings, encoder.layer "
                "with attention.self.query/key/value, intermediate, output); use "
                "granularity 'token' for other models"
            )
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise SlimkitError("the first-token split supports absolute position embeddings only")
        self.model = model
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:  # fmt: skip
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask, -1)
        context = (weights @ v).transpose(1, 2)
        return context.reshape(*context.shape[:2], self.heads * self.head_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model.embeddings(input_ids=input_ids)
        # keys at padding get the most negative float: softmax gives them exactly 0, as in BERT
        mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(
            hidden.dtype
        ).min
        streams = [hidden[:, :1], hidden[:, 1:]]
        for layer in self.model.encoder.layer:
            attention = layer.attention.self
            keys = torch.cat([self._split_heads(attention.key(s)) for s in streams], 2)
            values = torch.cat([self._split_heads(attention.value(s)) for s in streams], 2)
            out = []
            for s in streams:
                context = self._attend(self._split_heads(attention.query(s)), keys, values, mask)
                a = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + s)
                f = layer.output.dense(layer.intermediate(a))
                out.append(layer.output.LayerNorm(f + a))
            streams = out
        from slimkit.quant.transformer import mean_pool

        return mean_pool(torch.cat(streams, 1), attention_mask)


def _has(layer: nn.Module) -> bool:
    names = {name for name, _ in layer.named_modules()}
    return all(part in names for part in PARTS)
