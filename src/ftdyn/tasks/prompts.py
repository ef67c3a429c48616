"""Prompts: the formats per task family (Amuro & Char's default, IO and instruct formats), and a
prompt in parts (`Prompt`: demonstrations, then the query).

Templates follow Amuro & Char (v5, Table 5, and the authors' code), including the curly
apostrophe of the paraphrase instruct format (docs/definitions.md). The completion (label word or
target text) is appended after the prompt by `ftdyn.data.rows.encode_pair`.
"""

from __future__ import annotations

import dataclasses

FORMATS: dict[str, dict[str, str]] = {
    "nli": {
        "default": "### Input_1: {premise}\n ### Input_2: {hypothesis}\n ### Inference: ",
        "io": "{premise} {hypothesis}",
        "instruct": "Consider the following texts: Text 1: {premise} Text 2: {hypothesis} The relation is ",
    },
    "para": {
        "default": "### Input_1: {sentence1}\n ### Input_2: {sentence2}\n ### Paraphrase Classification: ",
        "io": "{sentence1} {sentence2}",
        "instruct": ("Let\u2019s compare the two sentences: Sentence_1: {sentence1} Sentence_2: {sentence2} "
                     "Are they paraphrasing?: "),
    },
    "summ": {
        "default": "### Input: {document}\n ### Summary: ",
        "io": "{document}",
        "instruct": "Please read the following text: {document} Provide a summary: ",
    },
    # The knowledge probe is a cloze in the corpus's own words: every format is the bare prompt.
    "probe": {"default": "{prompt}", "io": "{prompt}", "instruct": "{prompt}"},
    # Multiple choice as lm-eval-harness scores ARC: the question alone; each choice is a continuation.
    "mc": {
        "default": "### Question: {question}\n ### Answer: ",
        "io": "{question}",
        "instruct": "Answer the following question: {question} Answer: ",
    },
    "instruction": {
        "default": "### Instruction: {instruction}\n ### Response: ",
        "io": "{instruction}",
        "instruct": "Follow the instruction: {instruction} Response: ",
    },
}

# Families only real (hub) tasks use. Kept apart from FORMATS because the tiny ladder's tokenizer
# glossary and ladder key are built from FORMATS (`vocabulary_lines`): adding these there would
# rebuild every ladder. QGen follows Sun & Dredze 2024 (v5 Table 5) with the answers pre-rendered by
# `ftdyn.tasks.formatters.qgen`; multiple-choice prompts are pre-rendered by their formatter.
HUB_FORMATS: dict[str, dict[str, str]] = {
    "qgen": {
        "default": "### Input: {context}\n ### Answer: {answers}\n ### Question: ",
        "io": "{context}{answers_plain}",
        "instruct": "Given the context: {context} And the answer: {answers}Generate a suitable question: ",
    },
    "mc_hub": {"default": "{question}", "io": "{question}", "instruct": "{question}"},
}

# Where each family keeps its answer.
TARGET_FIELD = {"nli": "label", "para": "label", "summ": "summary", "probe": "label", "mc": "answer",
                "instruction": "response", "qgen": "question", "mc_hub": "label"}
# The families whose templates the ladder's tokenizer glossary holds. The glossary is part of every
# ladder's key: adding a family here rebuilds every ladder, so families added later stay out.
GLOSSARY_FAMILIES = ("nli", "para", "summ", "probe")


def render(family: str, fmt: str, example: dict) -> str:
    """The prompt of `example` in format `fmt` of `family`."""
    try:
        template = (FORMATS.get(family) or HUB_FORMATS[family])[fmt]
    except KeyError:
        raise KeyError(f"no prompt format {fmt!r} for task family {family!r}; "
                       f"families: {sorted([*FORMATS, *HUB_FORMATS])}, formats: default, io, instruct") from None
    return template.format(**example)


def target(family: str, example: dict) -> str:
    """The completion the model is trained to produce for `example`."""
    return example[TARGET_FIELD[family]]


def vocabulary_lines(label_words: list[str]) -> list[str]:
    """Text a tokenizer should see so prompt words and label words get tokens of their own."""
    words = " ".join(label_words)
    lines = [t.replace("{", "").replace("}", "") for family in GLOSSARY_FAMILIES for t in FORMATS[family].values()]
    return [f"{line} {words}" for line in lines]


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A prompt in the parts the budget may shorten: demonstration blocks (each a train example's
    prompt and answer, ending in a newline, in the order they precede the query) and the query,
    the evaluated example's own prompt. Its text is the blocks then the query."""

    query: str
    demos: tuple[str, ...] = ()

    def text(self, first_demo: int = 0) -> str:
        """The prompt's text from demonstration `first_demo` on (0: all of them)."""
        return "".join(self.demos[first_demo:]) + self.query
