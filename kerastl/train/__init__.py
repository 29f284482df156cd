"""Training: stages (`fine_tune`), optimizers and schedules, losses, the
feature cache, checkpoints and resume, distillation, the learning-rate
finder."""
