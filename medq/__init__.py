"""MedQ: active-learning data engine for medical image quality assessment."""
__version__ = "0.1.0"
