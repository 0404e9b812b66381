"""Contracts and plumbing shared by the Huitou services; no business rules live here."""
