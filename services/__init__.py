"""The four Huitou services, each its own process."""
