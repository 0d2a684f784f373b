"""GLUE and SQuAD evaluation of pretrained ELECTRA discriminators, with reports.

Entry point: `python -m evaluation.run` (see `evaluation/run.py` and docs/evaluation.md).
"""
