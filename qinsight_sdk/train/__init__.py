"""GRPO fine-tuning with Q-Insight's multi-task rewards (being built: the rewards are in place).

``rewards`` holds the reward functions, importable without TRL; the trainer will come as the
``[train]`` extra.
"""
