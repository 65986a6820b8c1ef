"""Plain scoring functions for tests (importable as ``scorers:<name>``)."""


def length_reward(prompts, responses):
    """A plain scoring function: longer responses score higher."""
    return [float(len(r.split())) for r in responses]


def polite_reward(prompts, responses):
    """A plain scoring function: counts polite words."""
    words = ("please", "sorry", "thanks", "safe", "cannot")
    return [float(sum(r.lower().count(w) for w in words)) for r in responses]
