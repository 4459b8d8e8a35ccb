"""Data files shipped with udcbench (the KDEF split list, ...)."""
