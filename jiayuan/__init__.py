"""The jiayuan service shell: settings, commands, API, and the wiring of ingest → rules → alerts."""
