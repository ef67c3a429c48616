"""The one encoder of prompts, for training rows and every evaluation path, with a context budget.

A prompt is encoded as its text with trailing whitespace removed, tokenised without special
tokens. It must leave room in the model's context (`model.config.max_position_embeddings`) for
what follows it: the completion and end-of-text token of a training row, 1 token for first-token
label scoring, the longest label sequence for constrained decoding, the longest choice for
multiple choice, `max_new_tokens` for generation, nothing for a classification head's feature.
The budget is the context minus that room. A prompt that fits is encoded exactly as before the
budget existed; one that does not is shortened by the rule in `PromptEncoder.fit`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from ftdyn.tasks.prompts import Prompt

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A prompt's token ids within the budget, and what was removed to get there."""

    ids: list[int]
    demos_dropped: int = 0  #: whole demonstrations removed (the earliest ones)
    tokens_cut: int = 0  #: tokens removed from the start of the query, after every demonstration

    @property
    def shortened(self) -> bool:
        return self.demos_dropped > 0 or self.tokens_cut > 0


def context_length(model) -> int:
    """The most positions `model` takes: its config's `max_position_embeddings`."""
    return int(model.config.max_position_embeddings)


class PromptEncoder:
    """Encodes prompts for one model's context, and counts the prompts it had to shorten.

    The counts (`shortened`, `demos_dropped`) add up over every `fit` call, so an evaluation that
    fits each prompt of a set once through one encoder can report them per set.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context: int):
        self.tokenizer, self.context = tokenizer, context
        self.shortened = self.demos_dropped = 0

    @classmethod
    def of(cls, model, tokenizer: PreTrainedTokenizerBase) -> PromptEncoder:
        return cls(tokenizer, context_length(model))

    def ids(self, text: str) -> list[int]:
        """Token ids of `text` without its trailing whitespace (a completion follows with its space)."""
        return self.tokenizer(text.rstrip(), add_special_tokens=False)["input_ids"]

    def budget(self, room: int) -> int:
        """Tokens a prompt may take when `room` tokens must follow it; at least one, or an error."""
        if room < 0 or room >= self.context:
            raise ValueError(f"a context of {self.context} tokens (model.config.max_position_embeddings) leaves "
                             f"no room for a prompt when {room} tokens must follow it; allowed 0 <= room < context")
        return self.context - room

    def fit(self, prompt: Prompt | str, room: int) -> Encoded:
        """The prompt's token ids in at most `context - room` tokens.

        The rule: a prompt that fits is encoded whole (its text's ids, unchanged). Otherwise whole
        demonstrations are dropped, the earliest first, so those nearest the query stay, until
        the rest fits; the text is re-tokenised after each drop, so the ids are exactly those of
        the shorter prompt's text. If the query alone is still too long, its last `budget` tokens
        are kept, as a training row keeps the end of a long prompt: the end holds the template's
        cue (e.g. `### Summary:`) that the answer follows.
        """
        if isinstance(prompt, str):
            prompt = Prompt(prompt)
        budget = self.budget(room)
        for dropped in range(len(prompt.demos) + 1):
            ids = self.ids(prompt.text(dropped))
            if len(ids) <= budget:
                return self._count(Encoded(ids, dropped))
        return self._count(Encoded(ids[-budget:], len(prompt.demos), len(ids) - budget))

    def fit_all(self, prompts: Sequence[Prompt | str], room: int) -> list[list[int]]:
        """Token ids of each prompt, fitted with the same `room`."""
        return [self.fit(p, room).ids for p in prompts]

    def _count(self, encoded: Encoded) -> Encoded:
        if encoded.shortened:
            self.shortened += 1
            self.demos_dropped += encoded.demos_dropped
        return encoded
