"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Each function draws one figure from a derived table (`before_after`, `laws`, `summary`, `inside`,
`gaussians`, `mrc`) into `out/<name>.png` and returns the file name, or None when the table is
empty. Figures are written to a temporary name and renamed (`files.atomic_path`), like every
other file of a report.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from ftdyn import files  # noqa: E402
from ftdyn.report import fits  # noqa: E402
from ftdyn.report.frames import CALIBRATION, DEFAULT_FORMAT, FORGET, PRIMARY  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, out: Path, name: str) -> str:
    try:
        fig.tight_layout()
        with files.atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive until closed
    return f"{name}.png"


PANELS_PER_ROW = 4


def _panels(n: int, width: float = 4.2, height: float = 3.2):
    """n panels, at most PANELS_PER_ROW a row (unused ones hidden)."""
    cols, rows = min(n, PANELS_PER_ROW), -(-n // PANELS_PER_ROW)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat[:n]


def one_design(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Rows of one method / prompt / rank / replay rate (sft and default preferred), and a note
    saying which, when the sweep varies them."""
    chosen = []
    for column, preferred in (("method", "sft"), ("prompt", DEFAULT_FORMAT), ("lora_rank", None),
                              ("replay_rate", 0.0)):
        if column not in table or table[column].nunique(dropna=False) < 2:
            continue
        values = table[column].dropna().unique().tolist()
        value = preferred if preferred in values else sorted(values)[0]
        table = table[(table[column] == value) | table[column].isna()]
        chosen.append(f"{column}={value}")
    return table, (" (" + ", ".join(chosen) + ")") if chosen else ""


def performance_by_checkpoint(ba: pd.DataFrame, out: Path) -> str | None:
    """Amuro & Char's figure: score across checkpoints, before (dashed) and after (solid) fine-tuning,
    one panel per task (x protocol, where the sweep scored several numbers of demonstrations), one
    colour per eval set; bands: the 95% interval across seeds where several ran, else the bootstrap's
    over examples."""
    if ba.empty:
        return None
    rows = ba[ba["metric"].isin(PRIMARY) & ba["split_kind"].isin(["in_domain", "out_of_domain"])]
    if rows.empty:
        return None
    rows, note = one_design(rows)
    protocols = sorted(rows["shots"].dropna().unique(), reverse=True) if "shots" in rows else []
    panels = [(t, s) for t in sorted(rows["task"].unique()) for s in (protocols if len(protocols) > 1 else [None])]
    fig, axes = _panels(len(panels))
    for ax, (task, shots) in zip(axes, panels):
        panel = rows[(rows["task"] == task) & ((rows["shots"] == shots) if shots is not None else True)]
        for i, (eval_set, g) in enumerate(panel.groupby("eval_set")):
            g = g.sort_values("ckpt_step")
            for stage, style in (("before", "--"), ("after", "-")):
                ax.plot(g["ckpt_step"], g[stage], style, marker="o", color=f"C{i}", label=f"{eval_set} {stage}")
                band = next((b for b in (f"{stage}_seed", stage) if f"{b}_lo" in g and g[f"{b}_lo"].notna().any()),
                            None)
                if band:
                    ax.fill_between(g["ckpt_step"], g[f"{band}_lo"], g[f"{band}_hi"], color=f"C{i}", alpha=0.15)
        ax.set_xscale("log")
        steps = sorted(rows["ckpt_step"].unique())
        ax.set_xticks(steps, [str(int(s)) for s in steps], minor=False)
        ax.minorticks_off()
        title = f"{task}, {int(shots)}-shot" if shots is not None else task
        ax.set(title=f"{title}{note}", xlabel="pre-training step (checkpoint)", ylabel=g["metric"].iloc[0])
        ax.legend(fontsize=7)
    return _save(fig, out, "performance_by_checkpoint")


def mrc_heatmap(mrc: pd.DataFrame, out: Path) -> str | None:
    """MRC per training task (rows) x checkpoint (columns), diverging around 0."""
    if mrc.empty:
        return None
    mrc, note = one_design(mrc)
    grid = mrc.pivot_table(index="task", columns="ckpt_step", values="mrc", aggfunc="mean", dropna=False)
    if grid.isna().all().all():  # every entry undefined (ftdyn.report.mrc): the table says why
        return None
    cells = set(zip(mrc["task"], mrc["ckpt_step"]))
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 2.5, 0.6 * grid.shape[0] + 1.8))
    bound = max(float(np.nanmax(np.abs(grid.values))), 1e-9)
    image = ax.imshow(grid.values, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto")
    for (r, c), value in np.ndenumerate(grid.values):
        ran = (grid.index[r], grid.columns[c]) in cells  # a cell no job ran stays blank
        label = f"{value:+.0%}" if np.isfinite(value) else "undefined" if ran else ""
        ax.text(c, r, label, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(grid.shape[1]), grid.columns)
    ax.set_yticks(range(grid.shape[0]), grid.index)
    ax.set(xlabel="checkpoint", ylabel="trained on", title=f"mean relative change on other tasks{note}")
    fig.colorbar(image, ax=ax)
    return _save(fig, out, "mrc_heatmap")


def forgetting_vs_loss(points: pd.DataFrame, law: pd.DataFrame, out: Path) -> str | None:
    """In-loop (fine-tuning loss, forget_ce) points per task and the fitted line forget = -c L + s."""
    if law.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for i, fit in law.reset_index(drop=True).iterrows():
        g = points[points["task"] == fit["task"]].dropna(subset=["train_loss", FORGET])
        ax.scatter(g["train_loss"], g[FORGET], s=12, color=f"C{i}", alpha=0.7)
        x = np.linspace(g["train_loss"].min(), g["train_loss"].max(), 50)
        ax.plot(x, -fit["c"] * x + fit["s"], color=f"C{i}",
                label=f"{fit['task']}: c={fit['c']:.3f}, s={fit['s']:.3f}, R²={fit['r2']:.3f}")
    ax.set(xlabel="fine-tuning loss L_ft", ylabel="forgetting L_f (forget_ce)", title="forgetting vs fine-tuning loss")
    ax.legend(fontsize=7)
    return _save(fig, out, "forgetting_vs_loss")


def power_law_curves(points: pd.DataFrame, laws: pd.DataFrame, out: Path) -> str | None:
    """Loss against step per LoRA rank (points) with the fitted shifted power law (lines)."""
    laws = laws.dropna(subset=["r2"]) if "r2" in laws else laws.iloc[0:0]
    if laws.empty:
        return None
    fig, axes = _panels(len(laws))
    for ax, (_, fit) in zip(axes, laws.iterrows()):
        g = points[(points["task"] == fit["task"]) & points["lora_rank"].notna()].dropna(subset=[fit["metric"]])
        for i, (rank, r) in enumerate(g.groupby("lora_rank")):
            ax.scatter(r["step"], r[fit["metric"]], s=10, color=f"C{i}", alpha=0.6)
            steps = np.linspace(r["step"].min(), r["step"].max(), 100)
            ax.plot(steps, fits.joint_law_curve(fit, r["trainable_params"].iloc[0], steps), color=f"C{i}",
                    label=f"rank {int(rank)} (P={int(r['trainable_params'].iloc[0]):,})")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set(xlabel="step N", ylabel=fit["metric"],
               title=f"{fit['task']} {fit['metric']}, {fit.get('law', 'product')} law: R²={fit['r2']:.3f}")
        ax.legend(fontsize=7)
    return _save(fig, out, "power_law_curves")


def replay_curves(replay: pd.DataFrame, out: Path) -> str | None:
    """In-domain gain and forgetting against the replay rate, one line per task x checkpoint."""
    if replay.empty:
        return None
    panels = {"in_domain_gain": ("in-domain gain (after - before)", "what fine-tuning teaches"),
              "forget_kl": ("forget_kl after", "what it forgets")}
    # a sweep with eval.pretrain_loss=false has no forget_kl
    panels = {column: labels for column, labels in panels.items() if column in replay}
    if not panels:
        return None
    fig, axes = _panels(len(panels))
    for i, ((task, ckpt), g) in enumerate(replay.groupby(["task", "ckpt_step"])):
        g = g.groupby("replay_rate")[list(panels)].mean().reset_index()
        for ax, column in zip(axes, panels):
            ax.plot(g["replay_rate"], g[column], marker="o", color=f"C{i}", label=f"{task} @ {ckpt}")
    for ax, (ylabel, title) in zip(axes, panels.values()):
        ax.set(xlabel="replay rate", ylabel=ylabel, title=title)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "replay_curves")


def calibration_bars(methods: pd.DataFrame, out: Path) -> str | None:
    """ECE and MCE of each method after fine-tuning, before and after temperature scaling.

    A summary beside the reliability diagrams, per method rather than per confidence bin."""
    columns = [f"{m}_after" for m in CALIBRATION]
    if methods.empty or not set(columns) <= set(methods):
        return None
    tasks = sorted(methods.dropna(subset=columns, how="all")["task"].unique())  # classification tasks
    if not tasks:
        return None
    fig, axes = _panels(len(tasks), width=5)
    for ax, task in zip(axes, tasks):
        g = methods[methods["task"] == task]
        final = g["ckpt_step"].max()
        g = g[g["ckpt_step"] == final].groupby("method")[columns].mean()
        x = np.arange(len(g))
        for i, column in enumerate(columns):
            ax.bar(x + (i - 1.5) * 0.2, g[column], width=0.2, label=column.removesuffix("_after"))
        ax.set_xticks(x, g.index)
        ax.set(ylabel="calibration error", title=f"{task}, fine-tuned, checkpoint {final}")
        ax.legend(fontsize=7)
    return _save(fig, out, "calibration_bars")


def reliability_diagrams(bins: pd.DataFrame, out: Path) -> str | None:
    """Accuracy against confidence per bin, one line per method after fine-tuning (final checkpoint of
    the sweep), one panel per task; the diagonal is perfect calibration."""
    if bins.empty:
        return None
    after = bins[bins["stage"] == "after"]
    tasks = sorted(after["task"].unique())
    if not tasks:
        return None
    fig, axes = _panels(len(tasks), width=4)
    for ax, task in zip(axes, tasks):
        g = after[after["task"] == task]
        g = g[g["ckpt_step"] == g["ckpt_step"].max()]
        for i, (method, m) in enumerate(g.groupby("method")):
            ax.plot(m["confidence"], m["accuracy"], marker="o", color=f"C{i}", label=method)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{task}, fine-tuned")
        ax.legend(fontsize=7)
    return _save(fig, out, "reliability_diagrams")


# --- Inside the run: LP-FT diagnostics and WiSE-FT (docs/diagnostics.md)

DIAGNOSTIC_PANELS = (("classifier_norm", "classifier norm ||V||_F (end)"),
                     ("feature_diff", "feature change: mean ||phi_ft - phi_0||"),
                     ("ft_ratio", "FT ratio (Tomihari & Sato)"))


def diagnostic_bars(diag: pd.DataFrame, out: Path) -> str | None:
    """Tomihari & Sato's comparison: per method, the classifier norm at the end, the feature change
    and the FT ratio, one bar per task x checkpoint (a mean over the other design columns)."""
    panels = [(c, title) for c, title in DIAGNOSTIC_PANELS if not diag.empty and c in diag and diag[c].notna().any()]
    if not panels:
        return None
    cells = diag.groupby(["task", "ckpt_step", "method"], dropna=False).mean(numeric_only=True).reset_index()
    methods = sorted(cells["method"].unique())
    groups = list(cells.groupby(["task", "ckpt_step"]))
    fig, axes = _panels(len(panels), width=4.6)
    width = 0.8 / max(len(groups), 1)
    for ax, (column, title) in zip(axes, panels):
        for i, ((task, ckpt), g) in enumerate(groups):
            values = g.set_index("method").reindex(methods)[column]
            ax.bar(np.arange(len(methods)) + i * width, values, width, color=f"C{i}", label=f"{task} @ {ckpt}")
        ax.set_xticks(np.arange(len(methods)) + width * (len(groups) - 1) / 2, methods)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "diagnostics")


def head_norm_curves(points: pd.DataFrame, out: Path) -> str | None:
    """The classifier norm along training (in-loop steps), one line per method, one panel per task."""
    if points.empty or "classifier_norm" not in points or points["classifier_norm"].isna().all():
        return None
    rows = points.dropna(subset=["classifier_norm"])
    tasks = sorted(rows["task"].unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        for i, (method, g) in enumerate(rows[rows["task"] == task].groupby("method")):
            curve = g.groupby("step")["classifier_norm"].mean()
            ax.plot(curve.index, curve.values, marker=".", color=f"C{i}", label=method)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel("classifier norm ||V||_F")
        ax.legend(fontsize=7)
    return _save(fig, out, "classifier_norm")


def frontier_curves(front: pd.DataFrame, out: Path) -> str | None:
    """WiSE-FT's learning-forgetting frontier: in-domain score against forgetting (forget_kl) as
    alpha goes from 0 (the start) to 1 (fine-tuned), one line per method (x checkpoint), one panel per task."""
    if front.empty or not {"in_domain", "forget_kl"} <= set(front):
        return None
    tasks = sorted(front["task"].unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        lines = front[front["task"] == task].groupby(["method", "ckpt_step"])
        for i, ((method, ckpt), g) in enumerate(lines):
            g = g.groupby("alpha")[["forget_kl", "in_domain"]].mean().reset_index()
            label = method if front["ckpt_step"].nunique() < 2 else f"{method} @ {ckpt}"
            ax.plot(g["forget_kl"], g["in_domain"], marker="o", color=f"C{i}", label=label)
            for _, p in g.iloc[[0, -1]].iterrows():
                ax.annotate(f"a={p['alpha']:g}", (p["forget_kl"], p["in_domain"]), fontsize=6)
        ax.set_title(task)
        ax.set_xlabel("forgetting: forget_kl")
        ax.set_ylabel("in-domain score")
        ax.legend(fontsize=7)
    return _save(fig, out, "frontier")


def gaussians_drift(toy: pd.DataFrame, out: Path) -> str | None:
    """The two-Gaussians toy: X2's drift (forgetting) and X1's error against the replay rate, one
    colour per width, one line style per depth; crosses: the NTK's predicted drift (ntk_change)."""
    if toy.empty or toy["replay_rate"].nunique() < 2:
        return None
    fig, axes = _panels(2)
    styles = dict(zip(sorted(toy["depth"].unique()), ["-", "--", ":", "-."] * 4))
    for i, width in enumerate(sorted(toy["width"].unique())):
        for depth, g in toy[toy["width"] == width].groupby("depth"):
            g = g.groupby("replay_rate")[[c for c in ("x2_drift", "x1_mse", "x2_ntk_pred_change") if c in g]].mean()
            label = f"width {width}, depth {depth}"
            axes[0].plot(g.index, g["x2_drift"], styles[depth], marker="o", color=f"C{i}", label=label)
            if "x2_ntk_pred_change" in g:
                axes[0].plot(g.index, g["x2_ntk_pred_change"], "x", color=f"C{i}", markersize=7)
            axes[1].plot(g.index, g["x1_mse"], styles[depth], marker="o", color=f"C{i}", label=label)
    axes[0].axhline(0, color="grey", linewidth=0.8)
    axes[0].set(xlabel="replay rate", ylabel="X2 drift (prediction after - before)",
                title="forgetting on X2 (x: NTK prediction)")
    axes[1].set(xlabel="replay rate", ylabel="X1 mean squared error after", title="fit on X1 (target -0.2)")
    axes[0].legend(fontsize=7)
    return _save(fig, out, "gaussians_drift")
