"""Outreach's HTTP routes: one router per resource, thin — they translate requests into calls of
the domain and the repository and turn domain errors into 4xx bodies that say what to fix."""
