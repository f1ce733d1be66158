"""Training parts shared by the fit and the generator: the accelerator (with its CPU/gloo rule), atomic
checkpoints, the learning-rate schedule, the metrics log and the progress bar."""
