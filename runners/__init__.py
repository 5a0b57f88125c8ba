"""Runner profiles: defaults and helpers for running the pipelines on specific Beam runners."""
