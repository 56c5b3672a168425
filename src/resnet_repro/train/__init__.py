"""The training engine: one SGD step, the loop around it, its checkpoint, the recipes; docs/engine.md."""
