"""The classification head of the head methods (`ftdyn.config.choices.HEAD_METHODS`) and the feature it reads."""

from __future__ import annotations

import torch
from torch import nn


def last_token_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The final layer's hidden state (after the last norm) at each row's last real token.

    Works for right padding (training batches) and left padding (evaluation batches).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                output_hidden_states=True, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]
    width = attention_mask.shape[1]
    last = width - 1 - attention_mask.flip(-1).long().argmax(-1)  # index of the last 1 in each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ClassifierHead(nn.Linear):
    """A linear map from the model's feature to one logit per label word.

    Its weight is drawn from N(0, std^2) by its own generator (seeded by `seed`, so the global
    RNG stream is not what decides it), its bias is zero: with `std` the model's
    `initializer_range`, the fresh head transformers gives a sequence-classification model,
    which ft and lorahead train from; with std=0 it is zero, where a probe starts its fit.
    """

    def __init__(self, hidden_size: int, n_labels: int, std: float = 0.0, seed: int = 0):
        super().__init__(hidden_size, n_labels)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        if std > 0:
            nn.init.normal_(self.weight, 0.0, std, generator=torch.Generator().manual_seed(seed))

    def norm(self) -> float:
        """Frobenius norm of the weight, the classifier norm Tomihari & Sato track."""
        return float(self.weight.detach().norm())
