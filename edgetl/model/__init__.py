"""Backbone registry and classifier construction.

``registry`` and ``backbones`` are TensorFlow-free so the CLI can list and
validate backbones on a device; ``keras`` and ``head`` need the [train] extra.
"""
