"""UDC and low-light degradation models: pure tensor code, batched, CPU and CUDA."""
