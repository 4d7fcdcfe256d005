"""LightningModules of the stages and helpers they share (EMA)."""
