"""Recipes: ai-lab.yaml specs and the recipe catalog (bundled plus imported folders)."""
