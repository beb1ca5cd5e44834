"""Drop-in mirrors of ``lime.wrappers``."""
