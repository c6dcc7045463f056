"""Telemetry: recording builder calls, and (later) export, import, analysis and explanation."""
