"""The training engine: one loop for every registered method, run records and the results store."""
