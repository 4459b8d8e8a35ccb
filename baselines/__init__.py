"""ResNet-18 facial expression recognition baselines (SCN, RUL, EAC, DAN)."""
