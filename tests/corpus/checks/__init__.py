"""Behavioural checks for the corpus: ``prepare()`` then ``exploited(ctx)`` per case."""
