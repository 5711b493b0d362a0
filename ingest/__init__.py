"""Ingestion: MQTT topics and payloads decoded once at the edge, and the durable journal."""
