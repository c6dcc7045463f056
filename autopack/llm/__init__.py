"""The builder LLM: settings, the client protocol and its two wire protocols (httpx, no SDKs)."""
