"""Running the model: the forward pass as one flat schedule, KV caches and the sequences that
own them, the prefix cache, the scheduler that runs several sequences in one pass, sampling, and
the benchmark that times them.
Imports memory, kernels and format; never chat, server or cli."""
