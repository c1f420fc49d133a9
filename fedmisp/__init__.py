"""fedmisp: a peer-to-peer federated MISP sync daemon."""

__version__ = "0.1.0"
