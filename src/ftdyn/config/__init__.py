"""Configuration: the typed schema of every config group (`schema`), its closed choices and the
method table (`choices`), how settings are marked (`settings`), paths (`paths`), composing a config
(`compose`) and a job's run key (`keys`).

The schema and the choices are this package's names too: `from ftdyn import config as C`, then
`C.TrainConfig`, `C.Method`, `C.to_typed(...)`.
"""

from ftdyn.config.choices import *  # noqa: F401,F403
from ftdyn.config.paths import cache_root, conf_dir, outputs_root, sweeps_dir  # noqa: F401
from ftdyn.config.schema import *  # noqa: F401,F403
from ftdyn.config.schema import _unknown_keys  # noqa: F401
