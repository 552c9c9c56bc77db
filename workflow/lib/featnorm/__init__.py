"""featnorm: I-JEPA encoders and the role of feature normalization (LayerNorm vs DynTanh)."""

__version__ = "0.1.0"
