"""Real tasks loaded by name through `datasets.load_dataset` (task.source=hub).

A hub task's YAML lists, per split it uses (`train`, `validation`, each evaluation set), a
`HubSetConfig`: hub id, dataset config, split, `fields` (example field -> dataset column),
`label_map` (dataset label value, as text -> label word) and at most one named `formatter`
(`ftdyn.tasks.formatters`). An example is built in that order: columns are copied under their
example names, the label is mapped (rows whose label has no entry are dropped, e.g. GLUE's -1),
then the formatter may reshape it (or drop it by returning None).

Sizes: train is `shuffle(seed=task.subsample_seed).select(range(task.train_size))` (Amuro &
Char's 6,000 with seed 42, Sun & Dredze 2024 v5 Table 1 and their code); validation and evaluation sets keep at most
`task.eval_size` rows, the same seeded shuffle when a set is larger. A validation set that names
the train split itself (MNLI, whose validation sets are evaluation data) takes the next
`eval_size` rows of the train shuffle, so it never repeats a train example. Rows are selected before
they are converted, so a few dropped rows can leave a set slightly smaller than its size.

An evaluation set with a `fewshot_split` (tulu's multiple-choice sets: each dataset's train
split) gets its own demonstration pool (`EvalSet.fewshot`), loaded the same way.

Offline, `task.local_dir` (else `$FTDYN_DATA_DIR`) makes the same code read local files in the
dataset's own schema, one per split: `<dir>/<hub id>/<config or "default">/<split>.jsonl`
(`.json` and `.parquet` also work), e.g. `<dir>/glue/mnli/validation_matched.jsonl`.

Example dicts (what `ftdyn.tasks.prompts` renders) per family:
    nli   {premise, hypothesis, label}            label: entailment | neutral | contradiction
    para  {sentence1, sentence2, label}           label: yes | no
    summ  {document, summary}
    qgen  {context, answers, answers_plain, question}
    mc    {question, choices: [str, ...], label: the correct choice's text, gold: its index}
          (tulu's train rows are chat turns: {question: the rendered prompt, label: the reply})
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import datasets

from ftdyn import config as C
from ftdyn.tasks.formatters import FORMATTERS

log = logging.getLogger(__name__)

LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def data_dir(local_dir: str | None) -> Path | None:
    """Where local stand-in files live: the config's directory, else $FTDYN_DATA_DIR, else none (hub)."""
    chosen = local_dir or os.environ.get("FTDYN_DATA_DIR")
    return Path(chosen) if chosen else None


def describe(spec: C.HubSetConfig) -> str:
    """`path/name:split`, how errors name a set."""
    return f"{spec.path}{'/' + spec.name if spec.name else ''}:{spec.split}"


def local_file(root: Path, spec: C.HubSetConfig) -> Path:
    """The local file of a split, in the layout the module docstring gives."""
    folder = root / spec.path / (spec.name or "default")
    for suffix in LOCAL_SUFFIXES:
        if (folder / f"{spec.split}{suffix}").exists():
            return folder / f"{spec.split}{suffix}"
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise FileNotFoundError(f"dataset {describe(spec)}: no local file {folder}/{spec.split}"
                            f"{{{','.join(LOCAL_SUFFIXES)}}}; files there: {present}")


def load_split(spec: C.HubSetConfig, local_dir: str | None = None) -> datasets.Dataset:
    """One split of a hub dataset, from the hub (cached by `datasets`) or from a local file."""
    root = data_dir(local_dir)
    if root is None:
        return datasets.load_dataset(spec.path, spec.name, split=spec.split)
    path = local_file(root, spec)
    return datasets.load_dataset(LOCAL_SUFFIXES[path.suffix], data_files=str(path), split="train")


def subsample(ds: datasets.Dataset, n: int, seed: int, skip: int = 0) -> datasets.Dataset:
    """Rows [skip, skip + n) of `shuffle(seed)` (train: `shuffle(seed).select(range(n))`); a set
    no larger than n with nothing to skip is kept whole and in order."""
    if skip == 0 and len(ds) <= n:
        return ds
    return ds.shuffle(seed=seed).select(range(min(skip, len(ds)), min(skip + n, len(ds))))


def to_examples(ds: datasets.Dataset, spec: C.HubSetConfig, task: str) -> list[dict]:
    """The example dicts of `ds` (module docstring); a missing column or an empty result is an error."""
    missing = [column for column in spec.fields.values() if column not in ds.column_names]
    if missing:
        raise KeyError(f"task {task}: dataset {describe(spec)} has no field {missing}; "
                       f"its fields are {ds.column_names} (task.data fields map example field -> column)")
    if spec.formatter is not None and spec.formatter not in FORMATTERS:
        raise KeyError(f"task {task}: formatter {spec.formatter!r} of {describe(spec)} is not defined; "
                       f"available: {sorted(FORMATTERS)}")
    out, unmapped = [], set()
    for row in ds:
        example = {key: row[column] for key, column in spec.fields.items()}
        if spec.label_map:
            value = str(example.get("label"))
            if value not in spec.label_map:
                unmapped.add(value)
                continue
            example["label"] = spec.label_map[value]
        example = FORMATTERS[spec.formatter](example) if spec.formatter else example
        if example is not None:
            out.append(example)
    if unmapped:
        log.warning("task %s: dropped rows of %s whose label %s has no label_map entry", task, describe(spec),
                    sorted(unmapped))
    if not out:
        raise ValueError(f"task {task}: dataset {describe(spec)} is empty after filtering ({len(ds)} rows read; "
                         f"label values without a label_map entry: {sorted(unmapped)}; label_map keys: "
                         f"{sorted(spec.label_map)})")
    return out


def load_set(cfg: C.TaskConfig, split: str, size: int, seed: int, skip: int = 0,
             spec: C.HubSetConfig | None = None) -> list[dict]:
    """The examples of the task's split `split` (a key of task.data; `spec` overrides its set),
    at most `size` of them, after skipping `skip` rows of the seeded shuffle."""
    spec = spec or cfg.data[split]
    ds = subsample(load_split(spec, cfg.local_dir), size, seed, skip)
    examples = to_examples(ds, spec, cfg.name)
    log.info("task %s: %s -> %d examples from %s", cfg.name, split, len(examples), describe(spec))
    return examples


def _same_split(a: C.HubSetConfig, b: C.HubSetConfig) -> bool:
    return (a.path, a.name, a.split) == (b.path, b.name, b.split)


def fewshot_pool(cfg: C.TaskConfig, split: str) -> list[dict]:
    """An evaluation set's own demonstrations (its `fewshot_split`, e.g. ARC's train split, as
    OLMo-Eval draws them), or none: the task's train split then serves."""
    spec = cfg.data[split]
    if spec.fewshot_split is None:
        return []
    return load_set(cfg, split, cfg.eval_size, cfg.subsample_seed, spec=replace(spec, split=spec.fewshot_split))


def load_splits(cfg: C.TaskConfig) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """Train, validation (empty if the task names none) and every evaluation set of a hub task."""
    seed = cfg.subsample_seed
    train = [] if cfg.eval_only else load_set(cfg, "train", cfg.train_size, seed)
    validation = []
    if "validation" in cfg.data:  # drawn from the train split: the rows after the train rows, never the same
        same = not cfg.eval_only and _same_split(cfg.data["validation"], cfg.data["train"])
        validation = load_set(cfg, "validation", cfg.eval_size, seed, skip=cfg.train_size if same else 0)
    return train, validation, {split: load_set(cfg, split, cfg.eval_size, seed) for split in cfg.eval_sets}
