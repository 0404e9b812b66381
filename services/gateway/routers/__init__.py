"""The gateway's own resources (keys, audit, session, privacy); forwarded ones come from the route table."""
