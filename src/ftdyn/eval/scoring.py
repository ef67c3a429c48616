"""How a model's answers are read off: label logits, constrained decoding, choice log-likelihood,
greedy generation.

Every scorer runs over length-sorted batches, left-padded with explicit position ids, so each
row sees the same positions it would alone and the scores do not depend on the batch size.
Prompts (text, or `ftdyn.data.encoding.Prompt`s whose demonstrations may be dropped) are fitted to the
model's context by `PromptEncoder.fit`, with room for what each scorer reads or writes after
them. A scorer given an `encoder` fits through it, so the caller can read how many it shortened.
Scoring forwards build no KV cache (`use_cache=False`): nothing reads it, and at 1B a batch's
cache is gigabytes (64 prompts x 200 tokens: 3.3 GB in float32). Only generation keeps one.

- **Label logits** (Amuro & Char's TokenProb, docs/definitions.md): one forward pass per batch,
  read at the last prompt position. A label's candidates are the first sub-tokens of its forms
  `" word"` (as the completion follows a prompt in training) and `"word"` (the authors' code
  lists both); its score is the logsumexp of its candidates' logits, the log of the (unnormalised)
  probability mass the model puts on the label, so softmax over labels is that mass renormalised.
- **Next word** (Amuro & Char's code, `eval/utils.py` `get_next_word_predictions` with
  `candidate_token_ids`, `--constraint_type next_word`): the same last-position logits; the
  candidates are every token of every label word, written bare and with a leading space; the
  prediction is the label owning the highest-probability candidate.
- **Constrained decoding**: greedy decoding that may only emit one label's token sequence, then
  end-of-text; the prediction is the label decoded. It yields predictions, no scores.
- **Choice log-likelihood** (lm-eval-harness multiple choice): context + each choice as one row;
  the summed log-probability of the choice's tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from rouge_score import rouge_scorer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ftdyn.data.encoding import PromptEncoder
from ftdyn.data.rows import completion_text
from ftdyn.tasks.prompts import Prompt

FORMS = {"first_token": ("space", "bare"), "first_token_space": ("space",)}  #: eval.label_scoring -> label forms


def _form(word: str, form: str) -> str:
    return completion_text(word) if form == "space" else word.strip()


def label_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str],
                    forms: Sequence[str] = ("space", "bare")) -> list[list[int]]:
    """Per label word, the distinct first sub-tokens of its forms; no token may serve two labels."""
    ids = [sorted({tokenizer(_form(w, f), add_special_tokens=False)["input_ids"][0] for f in forms}) for w in words]
    owner: dict[int, str] = {}
    for word, tokens in zip(words, ids):
        for t in tokens:
            if t in owner:
                raise ValueError(f"label words {owner[t]!r} and {word!r} share the first sub-token "
                                 f"{tokenizer.convert_ids_to_tokens(t)!r} (forms {list(forms)}): "
                                 "label-logit scoring cannot tell them apart")
            owner[t] = word
    return ids


def first_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    """The first sub-token of each word as it follows a prompt (`" word"`); they must all differ."""
    return [t[0] for t in label_token_ids(tokenizer, words, forms=("space",))]


def left_padded(token_lists: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, t in enumerate(token_lists):
        ids[i, width - len(t):] = torch.tensor(t)
        mask[i, width - len(t):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


#: bytes one evaluation batch may hold in activations, and in KV cache where it generates: a batch
#: takes fewer than eval.batch_size rows where its rows times its longest row's tokens would need more
#: (`token_budget`). The tiny ladder's batches stay far below it (about 160k tokens); OLMo-1B in
#: float32 takes ~8k tokens a scoring batch and ~2.5k a generating one.
EVAL_BYTES = 2 ** 30


def token_budget(model: PreTrainedModel, cached: bool) -> int:
    """Tokens (rows x width) one evaluation batch of `model` may hold within `EVAL_BYTES`: a
    layer's activations per token (4 hidden-size and 3 intermediate-size vectors), and with a KV
    cache (`cached`) every layer's key and value, at the weights' element size."""
    config = model.config
    hidden = config.hidden_size
    per_token = 4 * hidden + 3 * getattr(config, "intermediate_size", 4 * hidden)
    if cached:
        per_token += 2 * config.num_hidden_layers * hidden
    return max(1, EVAL_BYTES // (per_token * next(model.parameters()).element_size()))


def _length_sorted_batches(token_lists: Sequence[list[int]], batch_size: int, max_tokens: int | None = None,
                           grows: int = 0):
    """Indices in batches of at most `batch_size`, longest rows first; with `max_tokens`, a batch
    also stops before its rows times its longest row (plus `grows` tokens each) would exceed it."""
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]), reverse=True)
    start = 0
    while start < len(order):
        width = len(token_lists[order[start]]) + grows  # the batch's longest row
        rows = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // max(width, 1)))
        yield order[start:start + rows]
        start += rows


def device_of(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def per_row(model: PreTrainedModel, token_lists: Sequence[list[int]], pad_id: int, batch_size: int,
            run_batch: Callable[[dict, list[int]], Sequence], *, grows: int = 0, cached: bool = False) -> list:
    """`run_batch(batch, rows)` -> one output per row, over length-sorted, left-padded batches;
    `rows` are the batch rows' indices into `token_lists`. Outputs come back in input order.
    Batches hold at most `batch_size` rows, fewer where they would exceed `token_budget` (`grows`:
    tokens each row gains as it generates, `cached`: whether it keeps a KV cache)."""
    out: list = [None] * len(token_lists)
    model.eval()
    budget = token_budget(model, cached)
    for idx in _length_sorted_batches(token_lists, batch_size, budget, grows):
        batch = left_padded([token_lists[i] for i in idx], pad_id)
        outputs = run_batch({k: v.to(device_of(model)) for k, v in batch.items()}, idx)
        for row, i in enumerate(idx):
            out[i] = outputs[row]
    return out


def per_prompt(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
               batch_size: int, run_batch: Callable[[dict, list[int]], Sequence], *, room: int,
               encoder: PromptEncoder | None = None, generates: bool = False) -> list:
    """`per_row` over the prompts' tokens, each fitted to the model's context with `room` tokens
    after it (`PromptEncoder.fit`; trailing whitespace removed, as in training). `generates`: the
    batch decodes those `room` tokens with a KV cache."""
    encoded = (encoder or PromptEncoder.of(model, tokenizer)).fit_all(prompts, room)
    return per_row(model, encoded, tokenizer.pad_token_id, batch_size, run_batch,
                   grows=room if generates else 0, cached=generates)


def next_token_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
                      batch_size: int = 64, encoder: PromptEncoder | None = None) -> list[torch.Tensor]:
    """Per prompt, the logits over the vocabulary at its last position (float32, on the CPU): what
    the label-scoring rules read. Each prompt leaves room for the one token that follows."""
    return per_prompt(model, tokenizer, prompts, batch_size,
                      lambda b, _: model(**b, logits_to_keep=1, use_cache=False).logits[:, -1].float().cpu(), room=1, encoder=encoder)


def choice_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
                  choices: Sequence[Sequence[str]], batch_size: int = 64,
                  forms: Sequence[str] = ("space", "bare"), encoder: PromptEncoder | None = None) -> list[torch.Tensor]:
    """Per prompt, each choice's score: logsumexp of the last-position logits of its forms' first
    sub-tokens. Each prompt leaves room for that one token, as its training row does."""
    candidates = functools.lru_cache(maxsize=None)(lambda c: label_token_ids(tokenizer, c, forms))
    last = next_token_logits(model, tokenizer, prompts, batch_size, encoder)
    return [torch.stack([logits[ids].logsumexp(-1) for ids in candidates(tuple(c))])
            for logits, c in zip(last, choices)]


def next_word_candidates(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[list[int]]:
    """Per label word, the token ids the authors' `candidate_token_ids` credit to it.

    Their list is every token of `["w1", "w2", ..., " w1", " w2", ...]` (bare forms first, then
    with a leading space, each in label order), and `argmax` over it returns the first position
    of the best token. A token in several words' tokenisations therefore counts for the word that
    lists it first, so each id is credited to that word alone. Words are tokenised without
    special tokens (the authors' call adds the tokenizer's own, none for OLMo's and Pythia's).
    """
    owner: dict[int, int] = {}
    for form in ("bare", "space"):
        for label, word in enumerate(words):
            for token in tokenizer(_form(word, form), add_special_tokens=False)["input_ids"]:
                owner.setdefault(token, label)
    return [sorted(t for t, label in owner.items() if label == i) for i in range(len(words))]


def next_word_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
                     choices: Sequence[Sequence[str]], batch_size: int = 64,
                     encoder: PromptEncoder | None = None) -> list[torch.Tensor]:
    """Per prompt, each choice's score for Amuro & Char's next-word rule: the largest last-position
    logit among the tokens credited to it (`next_word_candidates`; -inf if none).

    The argmax over choices is the authors' prediction: softmax is monotone, so their argmax
    over the candidates' probabilities is the best candidate's logit, and each candidate counts
    for one word. (Two different candidates with bit-identical logits are the one case it can
    differ: they take the first position, this the lower label.) Calibration reads softmax over
    these scores. Each prompt leaves room for one token.
    """
    candidates = functools.lru_cache(maxsize=None)(lambda c: next_word_candidates(tokenizer, c))
    last = next_token_logits(model, tokenizer, prompts, batch_size, encoder)
    return [next_word_scores(logits, candidates(tuple(c))) for logits, c in zip(last, choices)]


def next_word_scores(logits: torch.Tensor, candidates: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per label, the largest of `logits` (one position's, over the vocabulary) at its candidate
    ids, -inf for a label with none."""
    return torch.stack([logits[list(ids)].max() if ids else torch.tensor(float("-inf")) for ids in candidates])


def label_sequences(tokenizer: PreTrainedTokenizerBase, words: Sequence[str],
                    forms: Sequence[str] = ("space", "bare")) -> list[list[tuple[int, ...]]]:
    """Per label word, the token sequences of its forms followed by end-of-text; distinct across labels."""
    eos = tokenizer.eos_token_id
    seqs = [sorted({(*tokenizer(_form(w, f), add_special_tokens=False)["input_ids"], eos) for f in forms})
            for w in words]
    owner: dict[tuple[int, ...], str] = {}
    for word, word_seqs in zip(words, seqs):
        for s in word_seqs:
            if s in owner:
                raise ValueError(f"label words {owner[s]!r} and {word!r} have the same tokens {list(s)}: "
                                 "constrained decoding cannot tell them apart")
            owner[s] = word
    return seqs


def _allowed_next(sequences: list[list[tuple[int, ...]]], generated: list[int], eos: int) -> list[int]:
    """Tokens that continue `generated` along some label's sequence (end-of-text once one is done)."""
    n = len(generated)
    allowed = {s[n] for word in sequences for s in word if len(s) > n and list(s[:n]) == generated}
    return sorted(allowed) or [eos]


def _decoded_label(sequences: list[list[tuple[int, ...]]], generated: list[int]) -> int:
    for label, word in enumerate(sequences):
        if any(list(s) == generated[:len(s)] for s in word):
            return label
    raise RuntimeError(f"constrained decoding produced {generated}, which is no label's tokens")


def constrained_choice(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
                       choices: Sequence[Sequence[str]], batch_size: int = 64,
                       forms: Sequence[str] = ("space", "bare"), encoder: PromptEncoder | None = None) -> list[int]:
    """Per prompt, the index of the choice that greedy decoding restricted to the choices' token
    sequences (via generate's `prefix_allowed_tokens_fn`) produces. Every prompt leaves room for
    the longest sequence of any prompt's choices: a batch decodes that many steps for all its rows."""
    eos = tokenizer.eos_token_id
    sequences = functools.lru_cache(maxsize=None)(lambda c: label_sequences(tokenizer, c, forms))

    def decode_batch(batch: dict[str, torch.Tensor], idx: list[int]) -> list[int]:
        width = batch["input_ids"].shape[1]
        row_seqs = [sequences(tuple(choices[i])) for i in idx]
        longest = max(len(s) for word_seqs in row_seqs for word in word_seqs for s in word)
        inputs = {k: v for k, v in batch.items() if k != "position_ids"}  # generate derives them from the mask
        new = model.generate(**inputs, max_new_tokens=longest, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=eos,
                             prefix_allowed_tokens_fn=lambda row, ids: _allowed_next(row_seqs[row],
                                                                                     ids[width:].tolist(), eos))
        return [_decoded_label(row_seqs[row], new[row, width:].tolist()) for row in range(len(idx))]

    distinct = {tuple(c) for c in choices}
    room = max((len(s) for c in distinct for word in sequences(c) for s in word), default=1)
    return per_prompt(model, tokenizer, prompts, batch_size, decode_batch, room=room, encoder=encoder,
                      generates=True)


def choice_loglik(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[Prompt | str],
                  choices: Sequence[Sequence[str]], batch_size: int = 64,
                  encoder: PromptEncoder | None = None) -> list[torch.Tensor]:
    """Per context, the summed log-probability of each choice's tokens following it.

    Context and choice are tokenised apart (the context without trailing whitespace, the choice
    as a completion `" choice"`), exactly as `encode_pair` builds a training row, and every
    (context, choice) pair is one row of a batched forward pass. Each context is fitted once,
    with room for its longest choice.
    """
    encoder = encoder or PromptEncoder.of(model, tokenizer)
    rows, continuation, owner = [], [], []
    for example, (context, options) in enumerate(zip(contexts, choices)):
        option_ids = [tokenizer(completion_text(o), add_special_tokens=False)["input_ids"] for o in options]
        context_ids = encoder.fit(context, room=max(map(len, option_ids))).ids
        for ids in option_ids:
            rows.append(context_ids + ids)
            continuation.append(len(ids))
            owner.append(example)

    def score_batch(batch: dict[str, torch.Tensor], idx: list[int]) -> list[float]:
        keep = max(continuation[i] for i in idx)
        logits = model(**batch, logits_to_keep=keep + 1, use_cache=False).logits[:, :-1].float()  # predict the last `keep` tokens
        token_lp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, -keep:, None]).squeeze(-1)
        return [float(token_lp[row, keep - continuation[i]:].double().sum()) for row, i in enumerate(idx)]

    sums = per_row(model, rows, tokenizer.pad_token_id, batch_size, score_batch)
    out: list[list[float]] = [[] for _ in contexts]
    for example, value in zip(owner, sums):
        out[example].append(value)
    return [torch.tensor(v, dtype=torch.float64) for v in out]


def generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt | str],
             max_new_tokens: int, batch_size: int = 64, encoder: PromptEncoder | None = None,
             cut_at_newline: bool = False) -> list[str]:
    """Greedy continuations (KV cache), up to the end-of-text token, as generated (Amuro & Char
    score them so); with `cut_at_newline` (`eval.cut_at_newline`), only the text before the
    first newline. Each prompt leaves room for `max_new_tokens`."""

    def continue_batch(batch: dict[str, torch.Tensor], _) -> list[str]:
        inputs = {k: v for k, v in batch.items() if k != "position_ids"}  # generate derives them from the mask
        new = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(new[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [text.split("\n")[0] if cut_at_newline else text for text in texts]

    return per_prompt(model, tokenizer, prompts, batch_size, continue_batch, room=max_new_tokens, encoder=encoder,
                      generates=True)


#: Rouge-L as HF `evaluate`'s rouge computes it with its defaults (Amuro & Char's `eval/eval_pred.py`):
#: rouge-score's own tokeniser (lower-cased, split on non-alphanumerics), no stemming
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Rouge-L F-measure per example (rouge-score, no stemming), reference first as rouge-score takes it."""
    return [_ROUGE.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
