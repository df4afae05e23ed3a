"""icckd: intra-class contrastive teachers and knowledge distillation."""

__version__ = "0.1.0"
