"""Training and evaluation scripts for MiniLM cross-encoders with the fused ListMLE loss.

`python -m train` trains (see train/loop.py), `python -m train.evaluate --model DIR` evaluates.
"""
