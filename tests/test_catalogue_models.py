"""Every real model config composes and resolves its revisions from a local stand-in; a hub
job runs end to end on one; identical checkpoints of a ladder are found and recorded.

The stand-in is what `model.local_dir` reads: one subdirectory per revision, named as on the hub
(`step342000-tokens1434B`, `step1000`, `main`), each a tiny random model saved with
`save_pretrained`, plus a byte-level BPE tokenizer trained in the test.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
)

from ftdyn import config as C
from ftdyn.config import keys
from ftdyn.config.compose import compose_config
from ftdyn.config.paths import conf_dir
from ftdyn.data.text import heldout_name, model_heldout_rows, text_rows
from ftdyn.models import checkpoints, fingerprints, hub, stand_ins
from ftdyn.train import train
from ftdyn.world.corpus import heldout_documents
from ftdyn.world.entities import make_world
from ftdyn.world.tokenizer import train_tokenizer

REAL_MODELS = ["olmo1b", "pythia160m", "pythia410m", "pythia1b"]
WORDS = ("entailment neutral contradiction yes no ### Input_1: Input_2: Paraphrase Classification: "
         "Inference: the a cat sat on mat dog ran = Valkyria Chronicles = is game")


def real_revision_names(run: C.TrainConfig) -> list[str]:
    """Branch names as the hub spells them: OLMo `step{N}-tokens{M}B` (~4.19B tokens per 1000
    steps), Pythia `step{N}`; both with `main`."""
    if run.model.name == "olmo1b":
        return [f"step{s}-tokens{round(s * 4.194304e-3)}B" for s in run.model.checkpoints[:-1]] + ["main"]
    return [f"step{s}" for s in run.model.checkpoints] + ["main", "step0", "step1"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([WORDS] * 50, vocab_size=300)


def tiny_neox(tokenizer, seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def save(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_every_real_model_composes_and_resolves_each_step_from_a_stand_in(name, tmp_path):
    run = C.to_typed(compose_config([f"model={name}", f"model.local_dir={tmp_path}"]))
    assert run.model.source == "hub" and run.model.trust_remote_code is False and run.eval.probe is False
    names = real_revision_names(run)
    for revision in names:
        (tmp_path / revision).mkdir()
    resolved = [hub.resolve(run.model, step) for step in run.model.checkpoints]
    expected = names[:len(run.model.checkpoints)]
    assert resolved == expected
    if name == "olmo1b":
        assert resolved[0] == "step1000-tokens4B" and resolved[-1] == "main"
        assert run.model.checkpoints == [1000, 18000, 342000, 424000, 505000, 592000, 738000, 738020]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        swept = compose("train", overrides=["ckpt=range", f"model={name}"], return_hydra_config=True)
    assert OmegaConf.select(swept, "hydra.sweeper.params")["ckpt.step"] == ",".join(map(str, run.model.checkpoints))


def test_a_step_without_a_revision_fails_naming_step_model_and_what_exists(tmp_path):
    for revision in ("step1000-tokens4B", "step342000-tokens1434B", "main"):
        (tmp_path / revision).mkdir()
    run = C.to_typed(compose_config(["model=olmo1b", f"model.local_dir={tmp_path}"]))
    with pytest.raises(KeyError) as err:
        hub.resolve(run.model, 18000)
    assert (f"model olmo1b ({tmp_path}) has no revision for step 18000; revisions that exist: "
            "['main', 'step1000-tokens4B', 'step342000-tokens1434B']") in str(err.value)


def test_the_online_path_reads_the_hubs_branches(monkeypatch):
    """Without a stand-in, revisions are the repository's branches (`list_repo_refs`)."""
    import huggingface_hub

    class Ref:
        def __init__(self, name):
            self.name = name

    class Refs:
        branches = [Ref("main"), Ref("step738000-tokens3094B"), Ref("step20000-tokens84B")]

    seen = []
    monkeypatch.setattr(huggingface_hub, "list_repo_refs", lambda repo: seen.append(repo) or Refs())
    run = C.to_typed(compose_config(["model=olmo1b"]))
    assert hub.resolve(run.model, 738000) == "step738000-tokens3094B"
    assert hub.resolve(run.model, 738020) == "main"
    assert seen == ["allenai/OLMo-1B-hf", "allenai/OLMo-1B-hf"]


def test_an_olmo_stand_in_loads_through_the_auto_classes(tokenizer, tmp_path):
    torch.manual_seed(0)
    olmo = OlmoForCausalLM(OlmoConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    save(olmo, tokenizer, tmp_path / "main")
    run = C.to_typed(compose_config(["model=olmo1b", f"model.local_dir={tmp_path}"]))
    model, tok = checkpoints.load_checkpoint(run.model, run.ckpt_step)
    assert type(model).__name__ == "OlmoForCausalLM" and next(model.parameters()).dtype == torch.float32
    assert fingerprints.fingerprint(model) == fingerprints.fingerprint(olmo)
    assert tok.pad_token_id is not None


def test_remote_code_never_runs_unless_trusted(tokenizer, tmp_path):
    """A stand-in whose config names its own modelling code: without model.trust_remote_code the
    library's class loads and that code never runs; with it, the flag reaches the loader."""
    save(tiny_neox(tokenizer, 0), tokenizer, tmp_path / "step1000")
    config = json.loads((tmp_path / "step1000" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tmp_path / "step1000" / "config.json").write_text(json.dumps(config))
    (tmp_path / "step1000" / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    run = C.to_typed(compose_config(["model=pythia160m", f"model.local_dir={tmp_path}",
                                     "model.checkpoints=[1000]"]))
    model, _, revision = hub.load(run.model, 1000)
    assert type(model) is GPTNeoXForCausalLM and revision == "step1000"
    run.model.trust_remote_code = True
    with pytest.raises(SystemExit, match="remote code ran"):
        hub.load(run.model, 1000)


def test_identical_checkpoints_are_warned_about_and_recorded(tokenizer, tmp_path, caplog):
    for revision, seed in (("step1", 1), ("step2", 2), ("step4", 2)):  # step4 re-serves step2's weights
        save(tiny_neox(tokenizer, seed), tokenizer, tmp_path / revision)
    run = C.to_typed(compose_config(["model=pythia160m", f"model.local_dir={tmp_path}",
                                     "model.checkpoints=[1,2,4]"]))
    with caplog.at_level(logging.WARNING, logger="ftdyn.models.fingerprints"):
        for step in (1, 2, 4):
            checkpoints.load_checkpoint(run.model, step)
    name = checkpoints.record_name(run.model)
    assert name.startswith("pythia160m-local-")
    record = json.loads(fingerprints.record_path(name).read_text())
    assert record["identical"] == [[2, 4]]
    assert record["steps"]["4"]["revision"] == "step4"
    assert record["steps"]["1"]["fingerprint"] != record["steps"]["2"]["fingerprint"]
    assert [r.getMessage() for r in caplog.records if "same weights" in r.getMessage()] == [
        f"ladder {name}: step 4 has the same weights as step 2 (fingerprint "
        f"{record['steps']['2']['fingerprint'][:12]}): the checkpoints are not distinct"]
    assert fingerprints.identical_steps(name, 2) == [4] and fingerprints.identical_steps(name, 1) == []


@pytest.mark.parametrize("name", REAL_MODELS)
def test_fingerprint_positions_stay_inside_every_tensor_of_every_catalogue_model(name):
    """Each catalogue model at its real shape, on the meta device (sizes, no weights): the sampled
    positions of every tensor run from its first element to its last, increasing, in bounds. The
    float32 rule of version 1 put the last one out of bounds in every one of these models."""
    sizes = {key: t.numel() for key, t in stand_ins.meta_model(name).state_dict().items()}
    assert max(sizes.values()) > 2 ** 24  # the embedding: 38.6M (pythia160m) to 103M (olmo1b, pythia1b)
    for key, n in sizes.items():
        positions = fingerprints.sample_positions(n)
        assert len(positions) == min(n, fingerprints.SAMPLE)
        assert positions[0] == 0 and positions[-1] == n - 1, key
        assert bool((positions[1:] > positions[:-1]).all()), key
    largest = max(sizes.values())
    assert torch.linspace(0, largest - 1, fingerprints.SAMPLE).long()[-1] == largest  # the old rule's bug


def test_a_tensor_above_2_24_elements_is_fingerprinted_to_its_last_element():
    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.zeros(2 ** 24 + 3), requires_grad=False)
    before = fingerprints.fingerprint(model)
    positions = fingerprints.sample_positions(2 ** 24 + 3)
    assert positions[-1] == 2 ** 24 + 2 and positions[1] == 256  # floor(1 * (n - 1) / 65535)
    with torch.no_grad():
        model.weight[-1] = 1.0
    assert fingerprints.fingerprint(model) != before
    with torch.no_grad():
        model.weight[-1], model.weight[1] = 0.0, 1.0  # between two sampled positions: not seen
    assert fingerprints.fingerprint(model) == before


def test_a_record_of_another_fingerprint_rule_is_read_as_empty():
    path = fingerprints.record_path("old-ladder")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ladder": "old-ladder", "steps": {"1": {"fingerprint": "ab", "revision": None}},
                                "identical": [[1, 2]]}))  # version 1 wrote no version
    assert fingerprints.read("old-ladder") == {"ladder": "old-ladder", "version": fingerprints.VERSION,
                                               "steps": {}, "identical": []}
    assert fingerprints.identical_steps("old-ladder", 1) == []


def test_fingerprint_samples_large_tensors_deterministically():
    small, big = torch.nn.Linear(4, 4), torch.nn.Linear(512, 256)  # 131k weights > SAMPLE
    assert fingerprints.fingerprint(big) == fingerprints.fingerprint(big)
    before = fingerprints.fingerprint(big)
    with torch.no_grad():
        big.weight[0, 0] += 1.0  # the first element is always sampled
    assert fingerprints.fingerprint(big) != before
    assert fingerprints.fingerprint(small.to(torch.bfloat16)) == fingerprints.fingerprint(
        small.to(torch.bfloat16).float())  # values are hashed as float32


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def wikitext(root: Path, split: str, n: int) -> None:
    lines = ["", " = Valkyria Chronicles = \n"] + [f" the cat sat on a mat {i} and a dog ran \n" for i in range(n)]
    write_jsonl(root / "Salesforce/wikitext/wikitext-103-raw-v1" / f"{split}.jsonl", [{"text": t} for t in lines])


def test_held_out_text_of_a_hub_model_comes_from_its_named_dataset(tokenizer, tmp_path):
    wikitext(tmp_path, "test", 40)
    run = C.to_typed(compose_config(["model=pythia160m", f"model.text.local_dir={tmp_path}",
                                     "model.text.seq_len=16", "model.text.heldout_rows=5"]))
    rows = model_heldout_rows(run.model, tokenizer)
    assert len(rows) == 5 and all(len(r["input_ids"]) == 16 and r["labels"] == r["input_ids"] for r in rows)
    assert tokenizer.decode(rows[0]["input_ids"]).startswith(" = Valkyria Chronicles = \n")  # empty lines skipped
    with pytest.raises(KeyError, match=r"text dataset Salesforce/wikitext/wikitext-103-raw-v1:test has no field "
                                       r"'page'; its fields are \['text'\]"):
        text_rows(C.TextConfig(path="Salesforce/wikitext", name="wikitext-103-raw-v1", field="page",
                               local_dir=str(tmp_path)), "test", tokenizer, 5, 16)


def test_a_hub_model_without_text_is_measured_on_tinyworld_held_out_documents(tokenizer):
    run = C.to_typed(compose_config(["model=pythia160m", "model.text.path=null", "model.text.seq_len=16",
                                     "model.text.heldout_rows=5"]))
    rows = model_heldout_rows(run.model, tokenizer)
    assert len(rows) == 5 and all(len(r["input_ids"]) == 16 and r["labels"] == r["input_ids"] for r in rows)
    assert heldout_name(run.model) == "tinyworld_heldout"
    world = make_world(run.model.pretrain.world_seed, run.model.pretrain.n_people)
    first = next(heldout_documents(world, run.model.pretrain.corpus_seed + 10_000))
    assert tokenizer.decode(rows[0]["input_ids"]) == tokenizer.decode(tokenizer(first, add_special_tokens=False)["input_ids"][:16])


@pytest.mark.parametrize(("override", "message"), [
    ("replay.rate=0.1", "replay.source=pretrain: ftdyn has no pre-training stream of hub model pythia160m"),
    ("eval.probe=true", "eval.probe=true: the world-facts probe only exists for ladder models"),
    ("model.text.path=null replay.rate=0.1 replay.source=text", "replay.source=text but model.text.path is not set"),
])
def test_hub_models_refuse_what_only_ladders_have(override, message):
    with pytest.raises(C.ConfigError, match=message):
        C.to_typed(compose_config(["model=pythia160m", *override.split()]))


def paws_files(root: Path) -> None:
    rows = [{"id": i, "sentence1": f"the cat sat {i}", "sentence2": f"a dog ran {i}", "label": i % 2}
            for i in range(12)]
    for split in ("train", "validation", "test"):
        write_jsonl(root / "google-research-datasets/paws/labeled_final" / f"{split}.jsonl", rows)
    write_jsonl(root / "SetFit/qqp/default/test.jsonl",
                [{"text1": "the cat", "text2": "a cat", "label": i % 2, "idx": i} for i in range(4)])
    write_jsonl(root / "SetFit/stsb/default/test.jsonl",
                [{"text1": "the mat", "text2": "a mat", "label": 1.2 * i, "idx": i} for i in range(5)])


@pytest.mark.slow
def test_a_hub_job_runs_end_to_end_on_a_stand_in(tokenizer, tmp_path):
    """model.source=hub on a Pythia-style stand-in, task=paws and wikitext from local files,
    replay from the text dataset: rows before and after, held-out rows named after the text, no
    probe, and the run row that says this step re-serves another's weights."""
    ladder_dir, data = tmp_path / "pythia", tmp_path / "data"
    save(tiny_neox(tokenizer, 1), tokenizer, ladder_dir / "step1")
    save(tiny_neox(tokenizer, 2), tokenizer, ladder_dir / "step2")
    shutil.copytree(ladder_dir / "step2", ladder_dir / "step4")
    paws_files(data)
    wikitext(data, "test", 30)
    wikitext(data, "train", 30)
    run = C.to_typed(compose_config([
        "model=pythia160m", f"model.local_dir={ladder_dir}", "model.checkpoints=[1,2,4]", "ckpt.step=4",
        f"model.text.local_dir={data}", "model.text.seq_len=16", "model.text.heldout_rows=4",
        "task=paws", f"task.local_dir={data}", "task.train_size=8", "task.eval_size=4", "fewshot.k=1",
        "method.max_steps=2", "method.batch_size=4", "replay.rate=0.25", "replay.source=text", "replay.seq_len=16"]))
    checkpoints.load_checkpoint(run.model, 2)  # an earlier job fingerprinted step 2
    metrics = train(run, tmp_path / "job")
    rows = [json.loads(line) for line in (tmp_path / "job" / "results.jsonl").read_text().splitlines()]
    for stage in ("before", "after"):
        for eval_set in ("paws", "qqp", "stsb"):
            assert 0 <= metrics[f"{stage}/{eval_set}/acc"] <= 1
        assert metrics[f"{stage}/wikitext_heldout/pretrain_loss"] > 0
    assert metrics["before/wikitext_heldout/forget_kl"] == 0
    assert not any(r["eval_set"] in ("world_facts", "tinyworld_heldout") for r in rows)
    assert metrics["run/run/ckpt_identical_to_step"] == 2 and metrics["run/run/train_steps"] == 2
    assert metrics["run/run/replay_fraction"] > 0
    assert (tmp_path / "job" / "done").exists() and {r["model"] for r in rows} == {"pythia160m"}


def small_stand_in(name: str, tokenizer, path: Path) -> None:
    """Catalogue model `name`'s architecture (`ftdyn.models.stand_ins`) at 2 layers, hidden 32."""
    model_type, shape = stand_ins.CATALOGUE_SHAPES[name]
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 vocab_size=len(tokenizer), max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                 eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    if "num_key_value_heads" in shape:
        small["num_key_value_heads"] = 2
    torch.manual_seed(0)
    save(AutoModelForCausalLM.from_config(stand_ins.real_config(name, **small)), tokenizer, path)


LLAMA_LINEAR = "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"


@pytest.mark.parametrize(("name", "adapted", "per_layer"), [
    ("micro", LLAMA_LINEAR, 7),  # ftdyn's own ladder: Llama
    ("olmo1b", LLAMA_LINEAR, 7),
    ("pythia160m", "dense,dense_4h_to_h,dense_h_to_4h,query_key_value", 4),  # GPT-NeoX
])
def test_lora_adapts_every_linear_layer_of_each_architecture_by_default(micro_ladder, tokenizer, tmp_path, name,
                                                                        adapted, per_layer):
    overrides = [f"model={name}"]
    if name != "micro":
        small_stand_in(name, tokenizer, tmp_path / "ladder" / stand_ins.final_revision(name))
        overrides += [f"model.local_dir={tmp_path / 'ladder'}", "model.text.path=null", "model.text.seq_len=32",
                      "model.text.heldout_rows=4"]
    metrics = train(compose_config(overrides + ["method=lora", "method.max_steps=3", "task.train_size=24",
                                                "task.eval_size=8", "fewshot.k=0"]), tmp_path / "job")
    rows = [json.loads(line) for line in (tmp_path / "job" / "results.jsonl").read_text().splitlines()]
    assert {r["lora_targets"] for r in rows} == {adapted}
    assert metrics["run/run/lora_modules"] == 2 * per_layer  # 2 layers
    heldout = "tinyworld_heldout"
    assert metrics[f"before/{heldout}/forget_kl"] == 0 and metrics[f"after/{heldout}/forget_kl"] > 0


def test_lora_targets_come_from_the_method_else_the_model_and_key_the_run_as_resolved(micro_ladder):
    from ftdyn.methods.fit import adapted_modules, add_lora

    def adapted(*overrides: str) -> tuple[list[str], str]:
        run = C.to_typed(compose_config(["model=micro", "method=lora", *overrides]))
        model, _ = checkpoints.load_checkpoint(run.model, 40)
        return adapted_modules(add_lora(model, run.method, run.lora_targets)), keys.run_key(run)

    every, key = adapted()
    assert ",".join(every) == LLAMA_LINEAR
    assert adapted("method.targets=[all-linear]")[1] == key  # spelled out on ftdyn's ladders: one run
    assert adapted(f"method.targets=[{','.join(C.LADDER_LINEAR)}]")[1] == key
    assert adapted("model.lora_targets=[q_proj,v_proj]")[0] == ["q_proj", "v_proj"]  # the model's own
    assert adapted("model.lora_targets=[q_proj,v_proj]", "method.targets=[k_proj]")[0] == ["k_proj"]  # a study's
    assert adapted("method.targets=[q_proj,v_proj]")[1] != key
    with pytest.raises(C.ConfigError, match=r"method.targets=\['all-linear', 'q_proj'\]: all-linear stands alone"):
        C.to_typed(compose_config(["method=lora", "method.targets=[all-linear,q_proj]"]))
    with pytest.raises(C.ConfigError, match="model.lora_targets is empty"):
        C.to_typed(compose_config(["model.lora_targets=[]"]))
