"""baize-tui: chat with Baize on local GGUF weights, in the terminal.

Importing this package is cheap: no torch, transformers or Textual is imported here.
"""

__version__ = "0.1.0"
