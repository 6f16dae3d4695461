"""GitHub's API as evalbot calls it: the client factory, the rate limiter, payload builders and their
publishing, the repository as a source, permissions. Imports nothing else of bot/github but constants
and metrics."""
