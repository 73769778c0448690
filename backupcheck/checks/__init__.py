"""The check families: each function takes evidence and returns findings; an empty list is a pass."""
