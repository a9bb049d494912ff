"""Length-sorted chunks: the same embeddings for less padding.

A training batch pads every text of a column to the column's longest. On the Debian pairs
documents average 57 tokens but a batch of 32 pads them to about 155, so most of the
encoder's work on CPU goes into padding. Running the column in chunks of texts of similar
length, each padded only to its own longest, gives the same embeddings (attention never
looks at padding) and the same loss, for about half the work.

Only right-padded batches are chunked (BERT-style tokenizers); anything else runs as it came.
"""

from __future__ import annotations

from typing import Any


def chunk_forward(module, rows: int) -> None:
    """Make `module` (sentence-transformers' Transformer module) run each batch of more
    than `rows` texts as length-sorted chunks of `rows`. Its output is padded back to the
    batch's width, so the modules after it (pooling) see what they always saw."""
    import torch
    import torch.nn.functional as F

    if getattr(module.model.config, "output_hidden_states", False):
        return  # every layer's output would have to be put back together too
    forward = module.forward
    output = module.module_output_name

    def chunked(features: dict[str, Any], **kwargs) -> dict[str, Any]:
        mask = features.get("attention_mask")
        if mask is None or mask.dim() != 2 or mask.size(0) <= rows:
            return forward(features, **kwargs)
        count, width = mask.shape
        lengths = mask.sum(dim=1)
        right_padded = torch.arange(width, device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(mask.bool(), right_padded):
            return forward(features, **kwargs)
        order = torch.argsort(lengths, descending=True)
        parts = []
        for chunk in order.split(rows):
            chunk_width = int(lengths[chunk].max())
            part = {}
            for key, value in features.items():
                if torch.is_tensor(value) and value.shape == mask.shape:
                    part[key] = value[chunk, :chunk_width]  # per token: input ids, mask, token types
                elif torch.is_tensor(value) and value.dim() >= 1 and value.size(0) == count:
                    part[key] = value[chunk]  # per text
                else:
                    part[key] = value
            tokens = forward(part, **kwargs)[output]
            parts.append(F.pad(tokens, (0, 0, 0, width - chunk_width)))
        features[output] = torch.cat(parts)[torch.argsort(order)]
        return features

    module.forward = chunked
