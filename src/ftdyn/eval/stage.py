"""The one stage evaluator: every measurement of a job at one stage, before fine-tuning, after
it, and along it (`step_N`), for language models and the two-Gaussians toy alike.

`StageEvaluator` holds what a job evaluates on (its task and cross-task sets, the world for the
knowledge probe, held-out text) and what it computes once (the base's knowledge-probe answers and
the toy base's predictions); `rows(model, stage, ...)` measures a model:

- a regression task (the toy): its sets' `pred`, `mse`, `drift` (`ftdyn.eval.regression`);
- otherwise, at `before` and `after`: the prompted sets (`ftdyn.eval.prompted`), the knowledge
  probe (`ftdyn.eval.knowledge`, with `eval.probe`) and held-out text (`ftdyn.eval.heldout`,
  with `eval.pretrain_loss`);
- along training (`in_loop`): held-out text and the knowledge probe's `acc` and `acc_vs_base`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ftdyn import config as C
from ftdyn.eval import knowledge, regression
from ftdyn.eval.heldout import heldout_rows
from ftdyn.eval.prompted import prompted_rows
from ftdyn.models.heads import ClassifierHead
from ftdyn.tasks import TaskData


class StageEvaluator:
    """Every measurement of one job's stages (module docstring)."""

    def __init__(self, run: C.TrainConfig, task: TaskData, tokenizer=None, world=None, cross: Sequence[TaskData] = (),
                 heldout: Sequence[dict] = (), heldout_name: str = "tinyworld_heldout"):
        """
        Args:
            run: The job's config: formats, protocols, scoring and what to measure.
            task: The task's data; cross: other tasks whose in-domain sets are scored too.
            tokenizer: The model's tokenizer (None for the toy).
            world: The tiny world the knowledge probe asks about (None: no probe, e.g. a hub model).
            heldout: Held-out text rows for the LM loss and forgetting (none: not measured);
                heldout_name: their eval_set.
        """
        self.run, self.task, self.tokenizer, self.world, self.cross = run, task, tokenizer, world, list(cross)
        self.heldout, self.heldout_name = list(heldout), heldout_name
        self._base_answers: list[int] | None = None  # the base's knowledge-probe answers (in-loop acc_vs_base)
        self._base_predictions = None  # the toy base's predictions (drift)

    @property
    def knows(self) -> bool:
        """Whether the knowledge probe is measured: a world to ask about, and `eval.probe`."""
        return self.world is not None and self.run.eval.probe

    def rows(self, model, stage: str, k: int | None = None, head: ClassifierHead | None = None, base=None,
             in_loop: bool = False) -> list[dict]:
        """Result rows of `model` at `stage`, with `k` demonstrations before each prompt.

        `base` is the checkpoint before fine-tuning (None: `model` is the base itself, so it agrees
        with itself and has forgotten nothing); `head` scores the task's own sets (head methods).
        """
        if self.task.cfg.kind == C.TaskKind.regression:
            return regression.regression_rows(model, stage, self.task, self._predictions_of(base or model))
        if in_loop:
            return self._heldout(model, base, stage) + self._knowledge_in_loop(model, base, stage)
        rows = prompted_rows(model, stage, k, self.run, self.task, self.tokenizer, head, base, self.cross)
        if self.knows:
            rows += knowledge.stage_rows(model, stage, self.tokenizer, self.world, self.run.eval.batch_size)
        if self.run.eval.pretrain_loss:
            rows += self._heldout(model, base, stage)
        return rows

    def _heldout(self, model, base, stage: str) -> list[dict]:
        if not self.heldout:
            return []
        return heldout_rows(model, base, stage, self.heldout, self.heldout_name, self.tokenizer.pad_token_id,
                            self.run.eval.batch_size)

    def _knowledge_in_loop(self, model, base, stage: str) -> list[dict]:
        if not self.knows:
            return []
        if self._base_answers is None:  # the base never changes: its answers once
            self._base_answers = knowledge.knowledge_predictions(base or model, self.tokenizer, self.world,
                                                                 self.run.eval.batch_size)[0]
        return knowledge.in_loop_rows(model, self._base_answers, stage, self.tokenizer, self.world,
                                      self.run.eval.batch_size)

    def _predictions_of(self, base):
        if self._base_predictions is None:  # the base never changes: its predictions once
            self._base_predictions = regression.predictions(base, self.task)
        return self._base_predictions
