"""autopack: database hygiene, token-safe draining and estimator calibration for Autopack."""

__version__ = "0.1.0"
