"""`python -m ftdyn.pretrain [overrides]`: build the selected model's checkpoints where they are
missing, then show them. The overrides are a job's (`model=tiny_qa`, `+experiment=amuro_char`):
the ladder built is the one those jobs load."""

from __future__ import annotations

import logging
import sys

from ftdyn import config as C
from ftdyn.config.compose import compose_config, quiet_libraries
from ftdyn.pretrain import ladder


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)  # rouge_score (absl) has
    # already set up the root logger at WARNING, on import
    quiet_libraries()
    cfg = C.to_typed(compose_config(argv))
    if cfg.model.source == C.ModelSource.toy:  # no language-model ladder: each job pre-trains its MLP once
        print(f"model={cfg.model.name} is the two-Gaussians toy: no ladder to build; its jobs pre-train each "
              f"width x depth once, cached under {C.cache_root() / 'toy'}")
        return
    if cfg.model.source == C.ModelSource.hub:
        print(f"model={cfg.model.name} is loaded from the hub ({cfg.model.hf_id}): nothing to build")
        return
    ladder.ensure(cfg.model)
    ladder.show(cfg.model)


if __name__ == "__main__":
    main(sys.argv[1:])
