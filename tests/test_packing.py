"""The fast path is exact: packed batches train as padded ones do, and no example sees another.

A small random Llama (2 layers, hidden 32) built from a transformers config: what is checked is
layout (positions, masks, labels), which the weights do not change.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ftdyn.data.batches import LengthBucketedBatches, TrainDataModule, collate
from ftdyn.data.packing import (
    collate_packed,
    first_fit,
    pack,
    packed_forward,
)
from ftdyn.data.rows import IGNORE
from ftdyn.methods.module import CausalLMModule
from ftdyn.models import checkpoints
from ftdyn.models.heads import last_token_features

VOCAB = 97


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def _rows(lengths=(9, 3, 14, 6, 1, 11, 5, 8), answer=3, seed=1) -> list[dict]:
    """SFT-like rows: a prompt, then `answer` labelled tokens (fewer in a short row)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        ids = torch.randint(2, VOCAB, (n,), generator=g).tolist()
        k = min(answer, n)
        rows.append({"input_ids": ids, "labels": [IGNORE] * (n - k) + ids[n - k:], "class_label": n % 3})
    return rows


def _example_loss(model, row: dict) -> torch.Tensor:
    """Token-mean loss of one example alone, unpadded."""
    out = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]]))
    return out.loss


def _packed_example_losses(model, rows: list[dict], width: int = 0) -> list[torch.Tensor]:
    """Each example's token-mean loss read out of one forward pass over the packed batch."""
    part = pack(rows, pad_id=0, width=width)
    logits = packed_forward(model, part).logits
    losses = []
    for i, row in enumerate(rows):
        b, end = part["last"][i].tolist()
        start = end - len(row["input_ids"]) + 1
        labels = torch.tensor(row["labels"][1:], dtype=torch.long)  # token t predicts token t+1
        losses.append(F.cross_entropy(logits[b, start:end], labels, ignore_index=IGNORE))
    return losses


def test_first_fit_fills_rows_longest_first_and_never_overfills():
    lengths = [9, 3, 14, 6, 1, 11, 5, 8]
    bins = first_fit(lengths, 16)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 16 for b in bins)
    assert len(bins) == 4  # 57 tokens need at least ceil(57 / 16) = 4 rows
    assert bins[0][0] == 2  # the longest example opens the first row


def test_a_packed_row_restarts_positions_per_example_and_leaves_each_first_token_unlabelled():
    rows = _rows()
    part = pack(rows, pad_id=0, width=20)
    assert part["input_ids"].shape == (len(first_fit([len(r["input_ids"]) for r in rows], 20)), 20)
    assert part["tokens"] == sum(len(r["input_ids"]) for r in rows) and part["rows"] == len(rows)
    for i, row in enumerate(rows):
        b, end = part["last"][i].tolist()
        n = len(row["input_ids"])
        span = slice(end - n + 1, end + 1)
        assert part["input_ids"][b, span].tolist() == row["input_ids"]
        assert part["position_ids"][b, span].tolist() == list(range(n))
        assert part["labels"][b, span].tolist() == [IGNORE, *row["labels"][1:]]
    labelled = sum(sum(t != IGNORE for t in r["labels"][1:]) for r in rows)
    assert int((part["labels"] != IGNORE).sum()) == labelled  # padding is unlabelled


@pytest.mark.parametrize("width", [0, 24])
def test_packed_per_example_losses_equal_each_example_alone(model, width):
    rows = _rows()
    alone = [_example_loss(model, r) for r in rows if any(t != IGNORE for t in r["labels"][1:])]
    packed = [loss for loss, r in zip(_packed_example_losses(model, rows, width), rows)
              if any(t != IGNORE for t in r["labels"][1:])]
    assert torch.allclose(torch.stack(packed), torch.stack(alone), atol=1e-5)


def test_packed_per_example_gradients_equal_each_example_alone(model):
    """The gradient of one example's loss read from the packed pass is that example's own
    gradient: nothing flows from (or to) the other examples in its row."""
    rows = _rows()
    for i in (0, 2, 5):
        model.zero_grad()
        _packed_example_losses(model, rows)[i].backward()
        packed = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        _example_loss(model, rows[i]).backward()
        for got, want in zip(packed, [p.grad for p in model.parameters()]):
            assert torch.allclose(got, want, atol=1e-5)
    model.zero_grad()


def test_perturbing_one_example_leaves_every_other_examples_logits_unchanged(model):
    rows = _rows()
    part = pack(rows, pad_id=0, width=30)
    with torch.no_grad():
        before = packed_forward(model, part).logits
        changed = {**part, "input_ids": part["input_ids"].clone()}
        b, end = part["last"][2].tolist()
        start = end - len(rows[2]["input_ids"]) + 1
        changed["input_ids"][b, start:end + 1] = (changed["input_ids"][b, start:end + 1] + 7) % VOCAB
        after = packed_forward(model, changed).logits
    inside = torch.zeros(part["input_ids"].shape, dtype=torch.bool)
    inside[b, start:end + 1] = True
    assert (after[inside] - before[inside]).abs().max() > 1e-3  # the perturbed example did change
    assert torch.equal(after[~inside], before[~inside])  # bit for bit: no other token saw it


def test_the_default_cache_would_let_examples_attend_to_each_other(model):
    """Why `packed_forward` passes use_cache=False: with a cache transformers ignores the
    restarting positions and attends across the whole row."""
    rows = _rows((6, 6))
    part = pack(rows, pad_id=0, width=12)
    with torch.no_grad():
        isolated = packed_forward(model, part).logits[0, 6:]
        leaky = model(input_ids=part["input_ids"], position_ids=part["position_ids"], use_cache=True).logits[0, 6:]
        alone = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits[0]
    assert torch.allclose(isolated, alone, atol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)


def test_packed_head_features_equal_the_padded_batchs(model):
    rows = _rows()
    padded = collate(rows, pad_id=0)
    with torch.no_grad():
        want = last_token_features(model, padded)
        got = last_token_features(model, pack(rows, pad_id=0, width=16))
    assert torch.allclose(got, want, atol=1e-5)


def _module(model, head=None) -> CausalLMModule:
    return CausalLMModule(model, optimizer=torch.optim.SGD, scheduler=None, head=head)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self\.log\(\)`")
@pytest.mark.parametrize("use_head", [False, True])
def test_a_packed_training_step_gives_the_padded_steps_loss_and_gradients(model, use_head):
    """Task and replay rows together, each part weighed by its share of the batch's rows."""
    from ftdyn.models.heads import ClassifierHead

    rows = _rows()
    for r in rows[5:]:
        r["replay"] = True
        r["labels"] = list(r["input_ids"])  # replay rows: every token labelled
        r["class_label"] = IGNORE
    head = ClassifierHead(32, 3) if use_head else None
    if head is not None:
        torch.nn.init.normal_(head.weight)
    module = _module(model, head)
    results = []
    for batch in (collate(rows, pad_id=0), collate_packed(rows, pad_id=0, width=16)):
        module.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    assert torch.allclose(packed_loss, padded_loss, atol=1e-5)
    assert len(packed_grads) == len(padded_grads) > 0
    for got, want in zip(packed_grads, padded_grads):
        assert torch.allclose(got, want, atol=1e-5)
    module.zero_grad()


def test_the_data_module_packs_when_asked_and_counts_the_same_tokens():
    rows = _rows()
    padded = TrainDataModule(rows, 4, pad_id=0, seed=3)
    packed = TrainDataModule(rows, 4, pad_id=0, seed=3, packing=True)
    a, b = list(padded.train_dataloader()), list(packed.train_dataloader())
    assert len(a) == len(b) == 2
    for plain, fast in zip(a, b):
        assert int(plain["attention_mask"].sum()) == fast["packed"]["task"]["tokens"]
        assert fast["rows"] == plain["input_ids"].shape[0]


def test_length_buckets_use_every_row_once_per_pass_in_batches_of_similar_length():
    lengths = torch.randint(1, 200, (400,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthBucketedBatches(lengths, 8, seed=0, window=10)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(400))
    assert len(batches) == len(sampler) == 50
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 30  # shuffled batches of 8 from 1..199 spread ~150
    resumed = LengthBucketedBatches(lengths, 8, seed=0, window=10, skip=7)
    assert list(resumed) == batches[7:]


def _differ(a: dict, b: dict, keys) -> list:
    """Keys whose values differ by more than float rounding (relative: a fitted temperature near
    its flat optimum is ~900 and moves in the 6th digit)."""
    return [(k, a[k], b[k]) for k in keys if a[k] != pytest.approx(b[k], rel=1e-4, abs=2e-4)]


def test_a_job_trains_to_the_same_results_packed_or_padded(micro_ladder, tmp_path):
    """The whole job through Lightning (sft with replay: task and replay parts): packing on (the
    default) or off, the same rows after training, and the same tokens trained on."""
    from conftest import MICRO

    from ftdyn.config.compose import compose_config
    from ftdyn.train import train

    args = [*MICRO, "task.train_size=96", "task.eval_size=40", "method.lr=3e-3", "replay.rate=0.25",
            "fewshot.k=0", "eval.probe=false"]
    packed = train(compose_config(args), tmp_path / "packed")
    padded = train(compose_config([*args, "trainer.packing=false"]), tmp_path / "padded")
    assert set(packed) == set(padded)
    assert packed["run/run/train_tokens"] == padded["run/run/train_tokens"] > 0
    after = [k for k in packed if k.startswith("after/")]
    assert len(after) > 10 and _differ(packed, padded, after) == []


def test_a_whole_stage_evaluated_in_batches_equals_one_example_at_a_time(micro_model_cfg):
    """Every row of an evaluation stage (label logits, calibration, probe, held-out loss): the
    length-sorted batches of eval.batch_size=64 give what a per-example loop gives."""
    from conftest import MICRO

    from ftdyn import config as C
    from ftdyn import tasks
    from ftdyn.config.compose import compose_config
    from ftdyn.data.text import model_heldout_rows
    from ftdyn.eval.stage import StageEvaluator
    from ftdyn.world.entities import make_world

    model, tokenizer = checkpoints.load_checkpoint(micro_model_cfg, micro_model_cfg.checkpoints[-1])
    rows = {}
    for size in (64, 1):
        run = C.to_typed(compose_config([*MICRO, "task.eval_size=24", "fewshot.k=2", f"eval.batch_size={size}"]))
        world = make_world(0)
        task = tasks.load(run.task, world, seed=0)
        evaluator = StageEvaluator(run, task, tokenizer, world, heldout=model_heldout_rows(run.model, tokenizer))
        got = evaluator.rows(model, "before", 2)
        rows[size] = {(r["eval_set"], r["metric"]): r["value"] for r in got}
    assert set(rows[64]) == set(rows[1]) and len(rows[1]) > 10
    assert _differ(rows[64], rows[1], rows[1]) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.filterwarnings(r"ignore:You are trying to `self\.log\(\)`")
@pytest.mark.parametrize("compiled", [False, True])
def test_on_cuda_a_packed_step_compiled_or_not_gives_the_padded_steps_loss(model, compiled):
    """On the GPU's attention kernels (SDPA with the packed block mask), and through torch.compile."""
    import copy

    cuda = copy.deepcopy(model).cuda()
    rows = _rows()
    padded = {k: v.cuda() for k, v in collate(rows, pad_id=0).items()}
    packed = collate_packed(rows, pad_id=0, width=32)
    packed["packed"] = {name: {k: v.cuda() if torch.is_tensor(v) else v for k, v in part.items()}
                        for name, part in packed["packed"].items()}
    with torch.no_grad():
        want = _module(cuda).training_step(padded, 0)
        got = CausalLMModule(cuda, torch.optim.SGD, None, compile_model=compiled).training_step(packed, 0)
    assert torch.allclose(got, want, atol=1e-4)
