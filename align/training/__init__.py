"""Training parts shared by the fit and the generator: the accelerator (with its CPU/gloo rule), atomic
checkpoints, the learning-rate schedule, the metrics log, the progress bar, seeds (their limit, the mixer, the
stream tags) and the checks of the shared settings (integer options, AdamW)."""
