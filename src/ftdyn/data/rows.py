"""Training rows: a prompt and its completion as token ids and labels.

An example becomes `prompt_ids + completion_ids`: the prompt with trailing whitespace removed,
then the completion with one leading space and the end-of-text token. Labels are -100 on the
prompt, so only the completion is trained (Amuro & Char's `encode_with_prompt_completion_format`).
The prompt goes through the encoder every evaluation prompt goes through
(`ftdyn.data.encoding.PromptEncoder`): a long one keeps its end. Evaluation scores the first
completion token at the last prompt position, so training and scoring see the same token boundary.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from ftdyn.data.encoding import PromptEncoder
from ftdyn.tasks.prompts import Prompt

IGNORE = -100


def completion_text(completion: str) -> str:
    """The completion as appended after a prompt: one leading space, no trailing space."""
    return " " + completion.strip()


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt | str, completion: str,
                max_len: int) -> dict[str, list[int]]:
    """Token ids and labels of prompt + completion + EOS in `max_len` tokens; labels only on the
    completion. The prompt is fitted by `PromptEncoder.fit` with room for completion + EOS."""
    completion_ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    prompt_ids = PromptEncoder(tokenizer, max_len).fit(prompt, room=len(completion_ids)).ids
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + completion_ids}


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt | str, max_len: int) -> dict[str, list[int]]:
    """Token ids of a prompt alone, for head-based methods: no token is an LM target. The head
    reads the last prompt position, so nothing needs room after it."""
    ids = PromptEncoder(tokenizer, max_len).fit(prompt, room=0).ids
    return {"input_ids": ids, "labels": [IGNORE] * len(ids)}
