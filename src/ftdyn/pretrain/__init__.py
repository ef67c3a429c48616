"""Pre-training: the checkpoints ftdyn builds itself (`ladder`: the tiny ladders on tinyworld;
the two-Gaussians toy's MLP), each built once, explicitly, before any job loads it."""
