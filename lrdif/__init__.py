"""LRDif: diffusion-based label restoration for FER under under-display cameras (arXiv 2402.00250)."""
