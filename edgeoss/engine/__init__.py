"""Running the model: the forward pass as one flat schedule, the KV cache, sampling, and the
benchmark that times them.
Imports memory, kernels and format; never chat, server or cli."""
