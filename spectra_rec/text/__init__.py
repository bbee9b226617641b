"""Text: versioned prompt templates shared by alignment (training text) and probing (inference)."""
