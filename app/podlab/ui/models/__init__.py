"""Qt item models over core objects (catalog models, stored models) and their filter proxies.

Views never hold core objects themselves: they show a proxy over one of these models, so that
sorting and filtering of 10,000 rows stay in the model/view machinery.
"""
