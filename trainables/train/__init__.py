"""Training one trial: its config, the loop, phases, stage 1, augmentation, checkpoints,
reporting, and the trainable Ray Tune runs."""
