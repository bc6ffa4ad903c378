"""The judging core: the judge, its configuration, tasks, prompts, profiles, parsing, batching, selection, results."""
