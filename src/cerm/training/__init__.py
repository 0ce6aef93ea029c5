"""Training your own CE-RM judge (curation, cold-start SFT, two-stage-rollout GRPO).

This package composes the same pieces as inference: curation uses the Judge, SFT targets come from a teacher Judge,
GRPO rollouts come from a backend and rewards from :mod:`cerm.protocol`. It is filled in by later work.
"""

__all__: list[str] = []
