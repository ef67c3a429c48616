"""Scorers pinned to independent, unbatched computations on the micro model."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO

from ftdyn import config as C
from ftdyn.config.compose import compose_config
from ftdyn.data.rows import completion_text
from ftdyn.eval.metrics import choice_predictions
from ftdyn.eval.scoring import (
    choice_logits,
    choice_loglik,
    constrained_choice,
    generate,
    label_sequences,
    label_token_ids,
    next_word_candidates,
    next_word_logits,
    next_word_scores,
)
from ftdyn.models import checkpoints
from ftdyn.tasks import demonstrations, load, task_config
from ftdyn.world.entities import make_world


@pytest.fixture(scope="module")
def micro(micro_model_cfg):

    return checkpoints.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[-1])


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def _next_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits after `ids`, one unpadded row alone."""
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def _nli_prompts(n: int = 12) -> tuple[list[str], list[list[str]]]:
    task = load(C.to_typed(compose_config(MICRO)).task, make_world(0))
    examples = task.eval_sets[0].examples[:n]
    prompts = [task.prompt(e, "default", demos="x " * (i % 4)) for i, e in enumerate(examples)]  # mixed lengths
    return prompts, [task.choices(e) for e in examples]


def test_label_score_is_the_logsumexp_over_both_forms_first_tokens(micro):
    model, tokenizer = micro
    prompts, choices = _nli_prompts()
    scores = choice_logits(model, tokenizer, prompts, choices, batch_size=5)
    for prompt, words, got in zip(prompts, choices, scores):
        logits = _next_logits(model, _ids(tokenizer, prompt.rstrip()))
        want = [torch.logsumexp(torch.stack([logits[_ids(tokenizer, " " + w)[0]], logits[_ids(tokenizer, w)[0]]]), 0)
                for w in words]
        assert torch.allclose(got, torch.stack(want), atol=1e-4)
    space_only = choice_logits(model, tokenizer, prompts[:1], choices[:1], forms=("space",))[0]
    logits = _next_logits(model, _ids(tokenizer, prompts[0].rstrip()))
    assert torch.allclose(space_only, torch.stack([logits[_ids(tokenizer, " " + w)[0]] for w in choices[0]]), atol=1e-4)


def test_label_forms_that_collide_across_labels_are_an_error(micro):
    _, tokenizer = micro
    # In the micro vocabulary " yes" and " yesterday" both start with the bare-space token.
    with pytest.raises(ValueError, match=r"'yes' and 'yesterday' share the first sub-token"):
        label_token_ids(tokenizer, ["yes", "yesterday"])
    assert label_token_ids(tokenizer, ["no"], forms=("space", "space")) == [[_ids(tokenizer, " no")[0]]]  # deduplicated


def test_next_word_candidates_are_every_token_of_every_form_each_credited_to_the_first_word_listing_it(micro):
    _, tokenizer = micro
    # Micro tokens: "yes" = y es (90 278), "no" = no (404), " yes" = Ġ y es (222 90 278), " no" = Ġn o (334 80).
    assert next_word_candidates(tokenizer, ["yes", "no"]) == [[90, 222, 278], [80, 334, 404]]
    # "entailment" = ent ai l m ent, "neutral" = n e u t ra l, "contradiction" = c on t rad i c t i on, and
    # each with a space adds Ġ / Ġn / Ġc: 'l' (77) counts for entailment, 't' (85) for neutral, listed first.
    assert next_word_candidates(tokenizer, ["entailment", "neutral", "contradiction"]) == [
        [77, 78, 222, 319, 473], [70, 79, 85, 86, 276, 334], [68, 74, 288, 330, 463]]


def test_next_word_score_is_the_best_candidate_logit_by_hand():
    logits = torch.zeros(500)
    logits[[222, 334, 404, 7]] = torch.tensor([5.0, 4.0, -1.0, 9.0])  # 7 is no label's token: ignored
    candidates = [[90, 222, 278], [80, 334, 404]]
    assert next_word_scores(logits, candidates).tolist() == [5.0, 4.0]  # " yes"'s Ġ beats " no"'s Ġn: yes
    assert next_word_scores(logits, [[90], []]).tolist() == [0.0, float("-inf")]


def _authors_next_word(model, tokenizer, prompt: str, words: list[str]) -> int:
    """Amuro & Char's eval/utils.py get_next_word_predictions with candidate_token_ids, then
    predict_classification.py's convert_pred_ids, for one prompt: force words bare then spaced."""
    force_words = [*words, *(" " + w for w in words)]
    unconcat = [_ids(tokenizer, w) for w in force_words]
    candidate_token_ids = [t for ids in unconcat for t in ids]
    probs = torch.softmax(_next_logits(model, _ids(tokenizer, prompt.rstrip())), -1)[candidate_token_ids]
    position = int(torch.argmax(probs))
    owner = [i for i, ids in enumerate(unconcat) for _ in ids][position]
    return owner % len(words)  # force_words[owner], stripped, as a label index


def test_next_word_prediction_is_the_authors_on_real_prompts(micro):
    model, tokenizer = micro
    prompts, _ = _nli_prompts()
    words = [["entailment", "neutral", "contradiction"], ["yes", "no"], ["lives", "works", "is"], ["in", "the", "a"]]
    choices = [c for c in words for _ in prompts]  # rare and frequent words: the micro model picks each label
    prompts = prompts * len(words)
    got = [int(s.argmax()) for s in next_word_logits(model, tokenizer, prompts, choices, batch_size=5)]
    assert got == [_authors_next_word(model, tokenizer, p, c) for p, c in zip(prompts, choices)]


def _constrained_by_hand(model, tokenizer, prompt: str, words: list[str]) -> int:
    """Greedy decoding one token at a time over the tokens that continue some label form + EOS."""
    eos = tokenizer.eos_token_id
    forms = [[(*_ids(tokenizer, f), eos) for f in {completion_text(w), w}] for w in words]
    prompt_ids, generated = _ids(tokenizer, prompt.rstrip()), []
    while True:
        live = [(label, s) for label, word in enumerate(forms) for s in word if list(s[:len(generated)]) == generated]
        if any(len(s) == len(generated) for _, s in live):
            return next(label for label, s in live if len(s) == len(generated))
        allowed = sorted({s[len(generated)] for _, s in live})
        logits = _next_logits(model, prompt_ids + generated)
        generated.append(allowed[int(logits[allowed].argmax())])


def test_constrained_decoding_matches_step_by_step_greedy_over_label_tokens(micro):
    model, tokenizer = micro
    prompts, choices = _nli_prompts(5)
    want = [_constrained_by_hand(model, tokenizer, p, c) for p, c in zip(prompts, choices)]
    assert constrained_choice(model, tokenizer, prompts, choices, batch_size=8) == want
    assert constrained_choice(model, tokenizer, prompts, choices, batch_size=1) == want
    with pytest.raises(ValueError, match="same tokens"):
        label_sequences(tokenizer, ["no", " no"])


def _mc_rows(n: int = 6):
    task = load(task_config("syn_mc"), make_world(0))
    examples = task.eval_sets[0].examples[:n]
    demos = demonstrations(task, 2, 0, "default")
    contexts = [task.prompt(e, "default", demos if i % 2 else "") for i, e in enumerate(examples)]  # mixed lengths
    return contexts, [task.choices(e) for e in examples]


def test_choice_loglik_is_the_sum_of_the_choice_token_log_probs(micro):
    model, tokenizer = micro
    contexts, choices = _mc_rows()
    got = choice_loglik(model, tokenizer, contexts, choices, batch_size=8)
    for context, options, sums in zip(contexts, choices, got):
        context_ids = _ids(tokenizer, context.rstrip())
        for option, value in zip(options, sums):
            ids = context_ids + _ids(tokenizer, " " + option)
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            n = len(ids) - len(context_ids)
            want = sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids)))
            assert value == pytest.approx(want, abs=1e-3)


def test_choice_loglik_does_not_depend_on_the_batch_size(micro):
    model, tokenizer = micro
    contexts, choices = _mc_rows()
    one = torch.cat(choice_loglik(model, tokenizer, contexts, choices, batch_size=1))
    eight = torch.cat(choice_loglik(model, tokenizer, contexts, choices, batch_size=8))
    assert torch.allclose(one, eight, atol=1e-4)


def test_acc_norm_divides_by_the_choice_length_in_characters():
    loglik = [torch.tensor([-10.0, -12.0]), torch.tensor([-3.0, -9.0])]
    choices = [["a cat", "reads long contracts"], ["in Rome", "in Vienna"]]
    raw, normalised = choice_predictions(loglik, choices)
    assert raw.tolist() == [0, 0]  # the higher sums
    assert normalised.tolist() == [1, 0]  # -10/5 = -2 < -12/20 = -0.6; -3/7 > -9/9


def test_generation_is_scored_as_generated_unless_cut_at_the_first_newline(micro):
    import copy

    model, tokenizer = micro
    model = copy.deepcopy(model)  # the micro model never writes a newline: give "\n" the output row of "."
    newline, dot = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("\n", "."))
    with torch.no_grad():
        weights = model.get_output_embeddings().weight
        weights[newline] = 1.05 * weights[dot]
    prompts = ["Alice lives in", "The pet of Bruno is a", "### Input: Clara is a baker.\n ### Summary: "]
    whole = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=2)
    cut = generate(model, tokenizer, prompts, max_new_tokens=20, batch_size=2, cut_at_newline=True)
    assert any("\n" in text and text.split("\n")[0].strip() for text in whole)  # words, then a newline
    assert cut == [text.split("\n")[0] for text in whole] and cut != whole
