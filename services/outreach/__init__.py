"""Outreach: decides which care touch each customer gets, when, on which channel — and sends it once."""
