"""Held-out pre-training text: the LM loss on it and forgetting against the base checkpoint
(eval_set `<text>_heldout`, split_kind `pretrain`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ftdyn.data.batches import collate
from ftdyn.data.rows import IGNORE
from ftdyn.eval.metrics import forgetting
from ftdyn.eval.rows import result_row
from ftdyn.eval.scoring import device_of

#: logits (rows x positions x vocabulary) one held-out forward may hold: forgetting works on them in
#: float64, several tensors of that size at once (~1 GB at this budget). The tiny ladder's batches
#: are far below it; a 50k vocabulary at 256 positions fits one row.
LOGIT_BUDGET = 2 ** 24


def heldout_batch_size(heldout: Sequence[dict], vocab_size: int, batch_size: int) -> int:
    """Rows per held-out forward: `batch_size`, fewer where their logits would exceed `LOGIT_BUDGET`."""
    width = max((len(r["input_ids"]) for r in heldout), default=1)
    return max(1, min(batch_size, LOGIT_BUDGET // (width * vocab_size)))


@torch.no_grad()
def heldout_measures(model, base, heldout: Sequence[dict], pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """On held-out pre-training text, per labelled position: the LM loss (`pretrain_loss`) and
    forgetting against `base` (`forget_ce`, `forget_kl`: Kalajdzievski's L_f, docs/definitions.md). `base` None: `model`
    is the base, and its forgetting is zero. Batches hold at most `batch_size` rows, fewer for a
    large vocabulary (`heldout_batch_size`): sums over positions, the same at any batch size."""
    totals = {"pretrain_loss": 0.0, "forget_ce": 0.0, "forget_kl": 0.0}
    count = 0
    for model_ in filter(None, (model, base)):
        model_.eval()
    batch_size = heldout_batch_size(heldout, model.config.vocab_size, batch_size)
    for start in range(0, len(heldout), batch_size):
        batch = {k: v.to(device_of(model)) for k, v in collate(heldout[start:start + batch_size], pad_id).items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        logits = model(**inputs).logits[:, :-1].float()
        base_logits = logits if base is None else base(**inputs).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        totals["pretrain_loss"] += F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                                   reduction="sum").item()
        ce, kl = forgetting(base_logits, logits, mask)
        totals["forget_ce"] += ce
        totals["forget_kl"] += kl
        count += int(mask.sum())
    return {metric: total / max(count, 1) for metric, total in totals.items()}


def heldout_rows(model, base, stage: str, heldout: Sequence[dict], name: str, pad_id: int,
                 batch_size: int) -> list[dict]:
    """`heldout_measures` as rows of eval_set `name`, split_kind `pretrain`."""
    return [result_row(name, "pretrain", stage, None, metric, value)
            for metric, value in heldout_measures(model, base, heldout, pad_id, batch_size).items()]
