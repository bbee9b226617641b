"""Fusion of category priors into RecBole and external rankers."""
