"""Rich renderers, one module per command group (core modules never import these)."""
