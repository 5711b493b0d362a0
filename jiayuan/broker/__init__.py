"""Broker accounts and TLS material: what an operator runs against the production broker."""
