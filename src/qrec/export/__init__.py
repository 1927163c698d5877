"""The served form of a model: one safetensors file (no pickle) holding codes, codebooks and dense weights."""
