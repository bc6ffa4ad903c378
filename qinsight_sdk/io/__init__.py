"""Inputs and outputs: images in; record files, PNG metadata and annotated images out."""
