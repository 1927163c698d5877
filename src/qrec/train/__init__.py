"""Training: typed config, a short epoch loop with exact resume, losses live with their models."""
