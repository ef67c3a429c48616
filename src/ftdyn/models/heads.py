"""The classification head of the head methods (`ftdyn.config.choices.HEAD_METHODS`), and the one
reader of the feature it reads."""

from __future__ import annotations

import torch
from torch import nn

from ftdyn.data.packing import packed_forward


def last_token_features(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The final layer's hidden state (after the last norm) at each example's last real token.

    Every kind of token batch: a packed part (`ftdyn.data.packing.pack`: positions restart per
    example, `last` locates each example's last token), or a padded batch whose attention mask
    marks the real tokens, right-padded (training rows, `ftdyn.data.batches.collate`) or
    left-padded with explicit positions (evaluation prompts, `ftdyn.eval.scoring.left_padded`).
    """
    if "last" in batch:
        hidden = packed_forward(model, batch, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        return hidden[batch["last"][:, 0], batch["last"][:, 1]]
    mask = batch["attention_mask"]
    out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch.get("position_ids"),
                output_hidden_states=True, logits_to_keep=1, use_cache=False)
    hidden = out.hidden_states[-1]
    last = mask.shape[1] - 1 - mask.flip(-1).long().argmax(-1)  # index of the last 1 in each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class ClassifierHead(nn.Linear):
    """A linear map from the model's feature to one logit per label word.

    Its weight is drawn from N(0, std^2) by its own generator (seeded by `seed`, so the global
    RNG stream is not what decides it), its bias is zero: with `std` the model's
    `initializer_range`, the fresh head transformers gives a sequence-classification model,
    which ft and lorahead train from; with std=0 it is zero, where the linear probe starts its fit.
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
