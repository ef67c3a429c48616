"""How jobs are launched and watched: ranks, strategies and preemption on clusters (`cluster`), and one
W&B run per job (`wandb_runs`)."""
