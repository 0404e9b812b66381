"""Scoring's internal API, one router per resource; all of it behind the internal service token."""
