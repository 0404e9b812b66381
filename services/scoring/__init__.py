"""Scoring: turns the event stream into living customer files and the scores that drive care."""
