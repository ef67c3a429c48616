"""Named formatting functions of hub tasks: what a field mapping and a label map cannot say.

Each takes an example whose fields a task YAML has already copied from dataset columns and
returns the example the prompt family renders (`ftdyn.tasks.hub` lists the shapes), or None to
drop the row. A YAML names one with `formatter: <name>`.

Multiple-choice prompts follow OLMo-Eval's / lm-eval's ranked-classification ("rc") formats:
the question as context, each choice scored as its continuation after a space.
"""

from __future__ import annotations

from collections.abc import Callable

STSB_YES_ABOVE = 3.5  # STS-B similarity in [0, 5]; Amuro & Char: label > 3.5 -> "yes"
ANSWER_KEYS = ("answer_a", "answer_b", "answer_c", "answer_d")


def stsb_yes_no(example: dict) -> dict:
    """STS-B as paraphrase: similarity > 3.5 is "yes", anything else "no"."""
    return {**example, "label": "yes" if float(example["label"]) > STSB_YES_ABOVE else "no"}


def qgen(example: dict) -> dict:
    """Question generation: the answers block of the QGen prompt, as the authors' code writes it.

    `Answer A: {a} Answer B: {b}Answer C: {c}` (Amuro & Char's template, Sun & Dredze 2024 v5 Table 5: no space before "Answer C",
    kept); SciQ's fourth answer follows C the same way (`...{c}Answer D: {d}`), an assumption: the
    reference gives only the three-answer form. The IO format joins the answers with no separator.
    """
    answers = [str(example[k]) for k in ANSWER_KEYS if k in example]
    block = f"Answer A: {answers[0]}"
    if len(answers) > 1:
        block += f" Answer B: {answers[1]}"
    block += "".join(f"Answer {'CD'[i]}: {a}" for i, a in enumerate(answers[2:]))
    rest = {k: v for k, v in example.items() if k not in ANSWER_KEYS}
    return {**rest, "answers": block, "answers_plain": "".join(answers)}


def tweetqa(example: dict) -> dict | None:
    """TweetQA as question generation: `### Answer: {Answer[0]}` (Sun & Dredze 2024 v5 Table 5)."""
    answers = example.pop("answer") or []
    if not answers:
        return None
    return {**example, "answers": answers[0], "answers_plain": answers[0]}


def _mc(question: str, choices: list[str], gold: int) -> dict:
    return {"question": question, "choices": list(choices), "label": choices[gold], "gold": gold}


def arc(example: dict) -> dict | None:
    """ARC / OpenBookQA: choices `{text: [...], label: [A, B, ...]}`, gold by `answerKey`."""
    keys = list(example["choices"]["label"])
    if example["answer"] not in keys:
        return None
    return _mc(f"Question: {example['question']}\nAnswer:", example["choices"]["text"], keys.index(example["answer"]))


def hellaswag(example: dict) -> dict | None:
    """HellaSwag: the activity label and context, continued by one of four endings."""
    if str(example["label"]).strip() == "":  # the test split is unlabelled
        return None
    return _mc(f"{example['activity_label']}: {example['context']}", example["endings"], int(example["label"]))


def boolq(example: dict) -> dict:
    """BoolQ: passage and question, answered "no" or "yes" (`answer` is a bool)."""
    return _mc(f"{example['passage']}\nQuestion: {example['question']}?\nAnswer:", ["no", "yes"],
               int(bool(example["answer"])))


def sciq_mc(example: dict) -> dict:
    """SciQ as multiple choice: support and question; the correct answer is the fourth choice."""
    choices = [example["distractor1"], example["distractor2"], example["distractor3"], example["correct_answer"]]
    return _mc(f"{example['support']}\nQuestion: {example['question']}\nAnswer:", choices, 3)


def tulu_chat(example: dict) -> dict | None:
    """A TÜLU-v2 conversation as one prompt/reply pair in the TÜLU chat format: every turn up to
    the last assistant reply is the prompt (`<|user|>\\n...\\n<|assistant|>\\n`), that reply the target."""
    messages = example["messages"]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    prompt = "".join(f"<|{m['role']}|>\n{m['content'].strip()}\n" for m in messages[:last]) + "<|assistant|>\n"
    return {"question": prompt, "label": messages[last]["content"].strip()}


FORMATTERS: dict[str, Callable[[dict], dict | None]] = {
    f.__name__: f for f in (stsb_yes_no, qgen, tweetqa, arc, hellaswag, boolq, sciq_mc, tulu_chat)}
