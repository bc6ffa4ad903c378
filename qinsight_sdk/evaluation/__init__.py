"""Evaluation: labelled data, resumable runs against it, the paper's metrics, figures."""
