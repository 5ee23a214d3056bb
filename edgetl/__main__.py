"""`python -m edgetl` runs the command-line interface."""

from edgetl.cli import run

# Guarded: the decoded store's worker processes (multiprocessing "spawn") import this module again.
if __name__ == "__main__":
    run()
