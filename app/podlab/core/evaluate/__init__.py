"""Evaluate: prompt sets with references, scorers, unattended runs over models, results."""
