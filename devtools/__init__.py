"""Tooling to develop, test and demonstrate jiayuan: a private broker and VictoriaMetrics, the
service as a child process, the demo and a notification receiver. Nothing in the shipped
service imports from here."""
