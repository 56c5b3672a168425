"""Scoring a trained net: top-k errors, the ImageNet 10-crop and multi-scale views, Figure 7's layer responses."""
