"""Ingest: the front door for shop and POS events; a 2xx means the event is in Kafka."""
