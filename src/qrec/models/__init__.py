"""Backbones: GMF, NeuMF (pointwise, BCE) and the LightGCN family (graph, BPR); all take any embedding table."""
