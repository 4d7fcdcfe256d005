"""Running stages: fit.py (one stage in its run directory), first_stage.py (the autoencoder and latent
cache a stage-2 run needs), train.py (walt-train's entry)."""
