"""Training the generator on Accelerate: the loop, the bucketed loss, metrics and MFU, the run folder and the
final ``save_pretrained`` model folder."""
